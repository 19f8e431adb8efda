"""The purity contract (repinterp.core.contract): held-out references drawn by a
stateless hash, never counted nor seeds nor targets, the greedy's closing step, the
ladder, and the same contract on the per-seed path and on both region indexes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import region, same_region, tiny_index
from nets import tiny_cnn, tiny_images

from repinterp import RepresentativeInterpreter, UserError
from repinterp.core.contract import LEVELS, Level, holdout_mask, holds, tightened
from repinterp.core.engine import greedy
from repinterp.core.greedy import BitCounts, pack_columns, select_boundaries
from repinterp.core.sharded import ShardedIndex
from repinterp.core.summary import Summary


def test_holdout_mask_is_a_seeded_stateless_share():
    a = holdout_mask(20000, 0.2, seed=3)
    assert torch.equal(a, holdout_mask(20000, 0.2, seed=3))
    assert not torch.equal(a, holdout_mask(20000, 0.2, seed=4))
    assert abs(float(a.float().mean()) - 0.2) < 0.01
    # a range of indices decides as the whole does: a row group needs no global array
    assert torch.equal(holdout_mask(torch.arange(5000, 7000), 0.2, 3), a[5000:7000])
    assert not holdout_mask(1000, 1e-9, 0).any()


def test_holds_is_the_point_estimate_rule():
    assert holds(0, 0, 0.99)                        # nothing held out falls inside
    assert holds(100, 99, 0.99) and not holds(100, 98, 0.99)
    assert holds(50, 50, 0.99) and not holds(50, 49, 0.99)


def _instance(seed: int, n: int = 40, q: int = 9):
    g = np.random.default_rng(seed)
    sides = g.random((n, q)) < 0.75
    same = g.random(n) < 0.5
    same[0] = sides[0].all() or True
    sides[0] = True                                 # the seed inside every boundary
    ignore = g.random(n) < 0.3
    ignore[0] = False
    return sides, same, ignore


@pytest.mark.parametrize("seed", range(6))
def test_ignored_images_are_not_counted_but_are_members(seed):
    """The greedy over counts that ignore some images picks what it picks on the other
    images alone; the ignored ones inside are members, and counted as held out."""
    sides, same, ignore = _instance(seed)
    keep = ~ignore
    alone = select_boundaries(torch.from_numpy(sides[keep]), torch.from_numpy(same[keep]),
                              min_purity=None)
    counts = BitCounts(pack_columns(~sides), same, same,
                       values=lambda r, c: torch.zeros(len(r), len(c)), ignore=ignore)
    steps = greedy(counts, None)
    assert steps.indices.tolist() == alone.indices.tolist()
    found = counts.finish(steps.indices, torch.zeros(len(steps.indices)))
    inside = sides[:, steps.indices.numpy()].all(1)
    assert found.members.tolist() == np.flatnonzero(inside).tolist()
    assert found.held == (int((inside & ignore).sum()), int((inside & ignore & same).sum()))


def _closed(sides, same, ignore, close, nearness=None):
    c = BitCounts(pack_columns(~sides), same, same,
                  values=lambda r, k: torch.zeros(len(r), len(k)), ignore=ignore)
    steps = greedy(c, None, close=close, nearness=nearness)
    return steps.indices.tolist(), c.finish(steps.indices, torch.zeros(len(steps.indices)))


@pytest.mark.parametrize("seed", range(6))
def test_closing_adds_every_candidate_that_excludes_no_counted_member(seed):
    sides, same, ignore = _instance(seed)
    plain, before = _closed(sides, same, ignore, 0)
    closed, after = _closed(sides, same, ignore, sides.shape[1])
    assert closed[:len(plain)] == plain
    members = set(after.members.tolist())
    counted_before = {i for i in before.members.tolist() if not ignore[i]}
    assert {i for i in members if not ignore[i]} == counted_before   # no counted image lost
    assert members <= set(before.members.tolist())
    for h in set(range(sides.shape[1])) - set(closed):      # brute force: none is free
        assert any(not sides[i, h] for i in counted_before)


@pytest.mark.parametrize("seed", [1, 4, 5])
def test_a_capped_closing_adds_the_free_candidates_nearest_the_seed(seed):
    """With at most ``close`` candidates, the free ones of smallest nearness (the
    seed's side value) are added, ties in index order: brute force over the free set."""
    sides, same, ignore = _instance(seed, n=30, q=14)
    near = torch.from_numpy(np.random.default_rng(seed).integers(0, 4, 14)).double()
    plain, before = _closed(sides, same, ignore, 0)
    counted = [i for i in before.members.tolist() if not ignore[i]]
    free = [h for h in range(14) if h not in plain and all(sides[i, h] for i in counted)]
    assert len(free) >= 2                          # instances where the order matters
    by_nearness = sorted(free, key=lambda h: (float(near[h]), h))
    for cap in (1, 2, len(free), 100):
        closed, _ = _closed(sides, same, ignore, cap, near)
        assert closed == plain + by_nearness[:cap]
    with pytest.raises(TypeError):
        _closed(sides, same, ignore, True)


def test_tightened_takes_the_first_level_that_holds_and_gives_up_after_the_last():
    grown: list[tuple[int, Level]] = []
    outcomes = {(7, 0): (10, 9), (7, 1): (10, 10), (8, 0): (5, 4), (8, 1): (5, 4),
                (8, 2): (4, 3), (9, 0): (0, 0)}

    def grow(seeds, level):
        out = []
        for s in seeds:
            grown.append((s, level))
            r = region([s])
            r.holdout = outcomes[(s, LEVELS.index(level))]
            out.append(r)
        return out

    got = tightened(grow, [7, 8, 9], 0.99)
    assert [None if r is None else r.holdout for r in got] == [(10, 10), None, (0, 0)]
    # each level grows only the seeds still short, together
    assert [s for s, lv in grown] == [7, 8, 9, 7, 8, 8]


@pytest.fixture(scope="module")
def fitted():
    model = tiny_cnn(0)
    x = tiny_images(0, 600)
    return RepresentativeInterpreter(model, "2", num_boundaries=12, progress=False).fit(x)


def test_summary_regions_meet_the_target_on_held_out_references(fitted):
    s = fitted.summarize(target_purity=0.99)
    held = holdout_mask(len(fitted.features_), 0.2, fitted.seed)
    assert s.regions and s.meta["target_purity"] == 0.99 and s.meta["holdout"] == 0.2
    preds = fitted.predictions_
    for r in s.regions:
        assert not held[r.seed_index]                      # seeds are never held out
        inside = r.members[held[r.members]]
        assert r.holdout == (len(inside), int((preds[inside] == r.predicted_class).sum()))
        assert holds(*r.holdout, 0.99)
    pooled = sum(r.holdout[1] for r in s.regions) / max(1, sum(r.holdout[0] for r in s.regions))
    assert s.holdout_purity == pytest.approx(pooled)
    # plain data: the counts survive saving
    again = Summary.from_dict(s.to_dict())
    assert [r.holdout for r in again.regions] == [r.holdout for r in s.regions]


def test_held_out_references_are_no_boundary_target(fitted, monkeypatch):
    """Bisection aims only at references that are not held out."""
    held = holdout_mask(len(fitted.features_), 0.2, fitted.seed)
    aimed: list[torch.Tensor] = []
    real = fitted._sample_many

    def spy(seeds):
        for _, _, same, _, _ in seeds:
            aimed.append((~same).nonzero()[:, 0])
        return real(seeds)
    monkeypatch.setattr(fitted, "_sample_many", spy)
    fitted.summarize(target_purity=0.99, max_regions=2)
    assert aimed and all(not held[a].any() for a in aimed)


def test_without_a_contract_the_summary_is_the_papers(fitted):
    s = fitted.summarize(target_purity=None)
    assert all(r.holdout is None for r in s.regions) and s.holdout_purity is None
    for r in s.regions:
        same_region(r, fitted.explain(r.seed_index))


def test_a_contract_that_no_region_meets_leaves_the_class_outside(fitted):
    """With a target nothing meets every seed is given up after 2 x max_regions tries."""
    s = fitted.summarize(target_purity=1.0, holdout=0.9, max_regions=2,
                         ladder=(Level(1, "auto"),))
    for c in s.classes:
        assert all(r.holdout is not None and r.holdout[0] == r.holdout[1]
                   for r in c.regions)


@pytest.mark.parametrize("bad", [
    {"target_purity": 0}, {"target_purity": 1.5}, {"target_purity": True},
    {"holdout": 0}, {"holdout": 1}, {"ladder": ()}, {"ladder": (Level(0, "auto"),)}])
def test_bad_contract_settings_are_refused(fitted, bad):
    with pytest.raises(UserError):
        fitted.summarize(**bad)


@pytest.mark.slow
def test_both_region_indexes_keep_the_same_contract():
    ix, _, _ = tiny_index(700)
    a = ix.summarize(max_regions=4, seed=1)
    held = holdout_mask(len(ix), 0.2, 1)
    assert a.regions and all(r.holdout is not None and holds(*r.holdout, 0.99)
                             and not held[r.seed_index] for r in a.regions)
    for groups in (1, 3):
        b = ShardedIndex.local(ix.rows, ix.bank, ix.feature_shape, groups=groups
                               ).summarize(max_regions=4, seed=1)
        assert len(a.regions) == len(b.regions)
        for ra, rb in zip(a.regions, b.regions, strict=True):
            same_region(ra, rb)
