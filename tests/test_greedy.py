import itertools
import math

import pytest
import torch

from repinterp.core.greedy import min_feasible_delta, select_boundaries


def random_instance(seed, n=40, q=8):
    g = torch.Generator().manual_seed(seed)
    sides = torch.rand(n, q, generator=g) < 0.7
    same = torch.rand(n, generator=g) < 0.5
    sides[0] = True  # image 0 is the seed: on its own side of every boundary
    same[0] = True
    return sides, same


def cost(sides, same, subset):
    cov = sides[:, list(subset)].all(1) if subset else torch.ones(len(sides), dtype=torch.bool)
    return int((same & ~cov).sum()), int((~same & cov).sum())


def brute_force(sides, same, delta):
    """Exact optimum and the best sum of single-boundary costs over feasible subsets."""
    q = sides.shape[1]
    best, best_modular = math.inf, math.inf
    for r in range(q + 1):
        for sub in itertools.combinations(range(q), r):
            c, d = cost(sides, same, sub)
            if d <= delta:
                best = min(best, c)
                best_modular = min(best_modular, sum(cost(sides, same, (h,))[0] for h in sub))
    return best, best_modular


@pytest.mark.parametrize("seed", range(25))
def test_greedy_vs_brute_force(seed):
    sides, same = random_instance(seed, q=6 + seed % 7)
    sel = select_boundaries(sides, same)
    chosen = sel.indices.tolist()
    c, d = cost(sides, same, chosen)
    assert d <= sel.delta == min_feasible_delta(sides, same)
    assert sel.covered[0]                         # the seed is always inside
    assert torch.equal(sel.covered, sides[:, sel.indices].all(1))
    opt, opt_modular = brute_force(sides, same, sel.delta)
    demand = int((~same).sum()) - sel.delta
    harmonic = sum(1 / k for k in range(1, demand + 1))
    assert opt <= c <= harmonic * opt_modular + 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_obvious_optimum_is_found(seed):
    sides, same = random_instance(seed, q=10)
    # boundary 4 excludes every other-class image and no image of the seed's class
    sides[:, 4] = same
    sel = select_boundaries(sides, same)
    assert sel.indices.tolist() == [4]
    assert sel.delta == 0
    assert cost(sides, same, [4]) == (0, 0)
    assert brute_force(sides, same, 0)[0] == 0


@pytest.mark.parametrize("seed", range(15))
def test_pruning_leaves_no_redundant_boundary(seed):
    sides, same = random_instance(seed, n=60, q=12)
    sel = select_boundaries(sides, same)
    full = cost(sides, same, sel.indices.tolist())
    for j in range(len(sel.indices)):
        rest = [h for k, h in enumerate(sel.indices.tolist()) if k != j]
        assert cost(sides, same, rest) != full
    unpruned = select_boundaries(sides, same, prune=False)
    assert set(sel.indices.tolist()) <= set(unpruned.indices.tolist())
    assert cost(sides, same, unpruned.indices.tolist()) == full


def test_user_delta_and_infeasible_delta():
    sides, same = random_instance(3, n=80, q=10)
    dmin = min_feasible_delta(sides, same)
    loose = select_boundaries(sides, same, delta=dmin + 10)
    assert cost(sides, same, loose.indices.tolist())[1] <= dmin + 10
    assert len(loose.indices) <= len(select_boundaries(sides, same).indices)
    if dmin > 0:
        with pytest.warns(UserWarning, match="infeasible"):
            sel = select_boundaries(sides, same, delta=dmin - 1)
        assert sel.delta == dmin


def test_infeasible_instance_reports_smallest_delta():
    sides = torch.ones(5, 3, dtype=torch.bool)
    same = torch.tensor([True, True, False, False, True])
    sel = select_boundaries(sides, same)
    assert sel.delta == 2 and sel.min_delta == 2 and len(sel.indices) == 0
    assert sel.covered.all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        select_boundaries(torch.ones(4, 2, dtype=torch.bool), torch.ones(3, dtype=torch.bool))


def hand_instance():
    """Seed s0 and s1..s3 of the seed's class, d1..d3 of others. Boundary h excludes:
    h0: d1 d2 d3 s1 s2   h1: d3   h2: d3 s3   h3: d1 d2   h4: d1 d2 (a copy of h3)."""
    excl = {0: "d1 d2 d3 s1 s2", 1: "d3", 2: "d3 s3", 3: "d1 d2", 4: "d1 d2"}
    names = ["s0", "s1", "s2", "s3", "d1", "d2", "d3"]
    sides = torch.tensor([[n not in excl[h].split() for h in range(5)] for n in names])
    same = torch.tensor([n.startswith("s") for n in names])
    return sides, same


def test_greedy_trace_pins_the_ratio_score_epsilons_and_ties():
    sides, same = hand_instance()
    # step 1: scores (new_same + 1e-5) / (new_diff + 1e-10): h0 2/3, h1 1e-5, h2 1,
    # h3 = h4 = 5e-6 -> h3 (the lowest index of a tie), although h0 excludes most others;
    # step 2 (d3 left): h0 2/1, h1 1e-5, h2 1 -> h1
    sel = select_boundaries(sides, same, prune=False)
    assert sel.indices.tolist() == [3, 1]
    assert sel.covered.tolist() == [True, True, True, True, False, False, False]
    # without eps1 the zero-cost h1 and h3 tie at 0 and the lower index wins
    assert select_boundaries(sides, same, eps1=0.0, prune=False).indices.tolist() == [1, 3]
    # "largest new_diff first" would have taken h0 and lost s1, s2: the ratio does not
    assert 0 not in sel.indices.tolist()


def reference_greedy(sides: list[list[bool]], same: list[bool], min_purity=None,
                     eps1: float = 1e-5, eps2: float = 1e-10):
    """METHOD §2 straight from the formulas, on Python sets: the chosen boundaries (after
    pruning), the covered images and the smallest feasible delta."""
    n, q = len(sides), len(sides[0])
    diff = {i for i in range(n) if not same[i]}
    min_delta = sum(1 for i in diff if all(sides[i]))
    ratio = None if min_purity is None else (1 - min_purity) / min_purity
    covered, chosen = set(range(n)), []
    while True:
        n_diff = len(covered & diff)
        if n_diff <= min_delta or (ratio is not None
                                   and n_diff <= ratio * (len(covered) - n_diff)):
            break
        best = None
        for h in range(q):
            out = {i for i in covered if not sides[i][h]}
            new_diff = len(out & diff)
            if new_diff == 0:
                continue
            score = (len(out) - new_diff + eps1) / (new_diff + eps2)
            if best is None or score < best[0]:
                best = (score, h)
        if best is None:
            break
        chosen.append(best[1])
        covered = {i for i in covered if sides[i][best[1]]}
    count = [sum(not sides[i][h] for h in chosen) for i in range(n)]
    kept = []
    for h in chosen:                       # prune in selection order
        if any(count[i] == 1 and not sides[i][h] for i in range(n)):
            kept.append(h)
        else:
            count = [c - (not sides[i][h]) for i, c in enumerate(count)]
    return kept, [c == 0 for c in count] if chosen else [True] * n, min_delta


@pytest.mark.parametrize("min_purity", [None, 0.9])
def test_greedy_equals_the_reference_from_the_formulas(min_purity):
    """select_boundaries (bool sides) and select_boundaries_bits (packed columns) against
    :func:`reference_greedy` on 300 random instances, ties included: the same boundaries
    in the same order, the same coverage and deltas."""
    from repinterp.core.greedy import pack_columns, select_boundaries_bits
    for trial in range(300):
        g = torch.Generator().manual_seed(trial)
        n = int(torch.randint(1, 120, (1,), generator=g))
        q = int(torch.randint(1, 25, (1,), generator=g))
        p = float(torch.rand(1, generator=g)) * 0.6 + 0.3
        sides = torch.rand(n, q, generator=g) < p
        same = torch.rand(n, generator=g) < 0.5
        kept, covered, min_delta = reference_greedy(sides.tolist(), same.tolist(),
                                                    min_purity)
        a = select_boundaries(sides, same, min_purity=min_purity)
        b = select_boundaries_bits(pack_columns(~sides.numpy()), n, same,
                                   min_purity=min_purity)
        for sel in (a, b):
            assert sel.indices.tolist() == kept, trial
            assert sel.covered.tolist() == covered, trial
            assert sel.delta == sel.min_delta == min_delta, trial
