"""Across each boundary: the contrastive neighbours of a region, exactly."""
from __future__ import annotations

import pickle

import pytest
import torch
from helpers import region
from nets import tiny_cnn, tiny_images

from repinterp import RepresentativeInterpreter
from repinterp.core.contrast import crossings
from repinterp.core.errors import UserError


def test_a_hand_built_region_in_the_plane():
    """Boundaries x >= 0 and y >= 0; the points and their sides are known exactly."""
    points = torch.tensor([[1.0, 1.0],     # 0 member
                           [3.0, 2.0],     # 1 member
                           [-0.5, 1.0],    # 2 across boundary 0
                           [-0.1, 2.0],    # 3 across boundary 0, nearer
                           [-1.0, -1.0],   # 4 across both: nobody's neighbour
                           [2.0, -0.3],    # 5 across boundary 1
                           [-0.1, 5.0],    # 6 across boundary 0, tied with 3
                           [0.0, -2.0]],   # 7 on boundary 0 (inside it), across 1
                          dtype=torch.float64)
    side = points.clone()                  # w = identity, b = 0
    pred = torch.tensor([1, 1, 0, 2, 0, 2, 0, 1])
    pairs = torch.tensor([[1, 0], [1, 2]])
    got = crossings(side, pred, pairs, members=torch.tensor([0, 1]), k=8)
    assert [c.boundary for c in got] == [0, 1]
    assert got[0].pair == (1, 0) and got[1].pair == (1, 2)
    assert got[0].count == 3 and got[0].indices.tolist() == [3, 6, 2]   # tie: lower index
    assert got[0].values.tolist() == [-0.1, -0.1, -0.5]
    assert got[0].predictions.tolist() == [2, 0, 0]
    assert got[1].count == 2 and got[1].indices.tolist() == [5, 7]
    assert got[1].predictions.tolist() == [2, 1]
    # spread: the lower middle of the members' side values (1 and 3 -> 1; 1 and 2 -> 1)
    assert got[0].spread == 1.0 and got[1].spread == 1.0
    assert got[0].relative.tolist() == pytest.approx([0.1, 0.1, 0.5])
    # k caps the list, never the count
    short = crossings(side, pred, pairs, members=torch.tensor([0, 1]), k=1)
    assert short[0].indices.tolist() == [3] and short[0].count == 3
    assert crossings(side, pred, pairs, torch.tensor([0, 1]), k=0)[0].indices.numel() == 0
    with pytest.raises(ValueError):
        crossings(side, pred, pairs, torch.tensor([0, 1]), k=-1)


def test_a_member_is_never_its_own_neighbour():
    """A member whose recomputed side value rounds below zero stays a member."""
    side = torch.tensor([[1.0, 1.0], [-1e-12, 1.0], [-2.0, 1.0]], dtype=torch.float64)
    got = crossings(side, torch.tensor([0, 0, 1]), torch.tensor([[0, 1], [0, 2]]),
                    members=torch.tensor([0, 1]))
    assert got[0].indices.tolist() == [2] and got[0].count == 1


def test_a_boundary_nobody_crosses_alone_has_an_empty_row():
    side = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    got = crossings(side, torch.tensor([0, 1]), torch.tensor([[0, 1], [0, 1]]),
                    members=torch.tensor([0]))
    assert [c.count for c in got] == [0, 0]
    assert all(c.indices.numel() == 0 for c in got)


@pytest.fixture(scope="module")
def fitted():
    x = tiny_images(0, 300)
    interp = RepresentativeInterpreter(tiny_cnn(0), layer="2", num_boundaries=12,
                                       seed=0).fit(x)
    return interp, x


def test_the_interpreter_agrees_with_a_slow_reference(fitted):
    """Each crossing recomputed image by image from the network's own features: exactly
    the non-members outside this boundary alone, the k nearest of them listed."""
    interp, x = fitted
    region = interp.explain(5)
    got = interp.across(region, k=4)
    assert len(got) == region.num_boundaries
    feats = interp.features(x)
    members = set(region.members.tolist())
    for c in got:
        alone = []
        for i in range(len(x)):
            s = feats[i] @ region.weights.T + region.biases
            if i not in members and s[c.boundary] < 0 and int((s < 0).sum()) == 1:
                alone.append((abs(float(s[c.boundary])), i))
        alone.sort()
        assert c.count == len(alone)
        assert c.indices.tolist() == [i for _, i in alone[:4]]
        assert c.predictions.tolist() == interp.predict(x[c.indices]).tolist()
        assert c.pair == tuple(region.pairs[c.boundary].tolist())
    # the demo's question: some boundary of this region has a neighbour
    assert any(c.count for c in got)
    assert pickle.loads(pickle.dumps(got))[0].count == got[0].count


def test_a_region_of_another_layer_or_a_bad_k_is_refused(fitted):
    interp, _ = fitted
    with pytest.raises(UserError, match="another model or layer"):
        interp.across(region([0, 1]))
    with pytest.raises(UserError, match="non-negative integer"):
        interp.across(interp.explain(0), k=-2)
