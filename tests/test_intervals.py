"""The Wilson interval of a held-out purity, against its closed forms and scipy's."""
from __future__ import annotations

import math

import pytest

from repinterp.core.metrics import wilson_interval

Z2 = 1.959963984540054 ** 2


def test_closed_forms_at_the_edges_and_the_middle():
    lo, hi = wilson_interval(200, 200)
    assert lo == pytest.approx(200 / (200 + Z2), abs=1e-12) and hi == 1.0
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(Z2 / (10 + Z2), abs=1e-12)
    lo, hi = wilson_interval(5, 10)
    half = math.sqrt(Z2) * math.sqrt(0.025 + Z2 / 400) / (1 + Z2 / 10)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (7, 9), (495, 500), (9911, 10000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_the_same_as_scipys(k, n, confidence):
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(k, n, confidence) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_a_regions_heldout_stats_carry_the_interval_into_the_report_data():
    import torch
    from helpers import region

    from repinterp.app.stats import region_stats, summary_dict
    from repinterp.core.summary import Summary
    r = region([0, 1, 2], cls=1)                     # one zero boundary: holds everything
    st = region_stats(r, torch.zeros(5, 2), torch.tensor([1, 1, 0, 1, 1]))
    assert (st.inside, st.purity, st.interval) == (5, 0.8, wilson_interval(4, 5))
    data = summary_dict(Summary.single(r, 3), stats=[st])
    rd = data["classes"][0]["regions"][0]
    assert rd["heldout_interval"] == list(wilson_interval(4, 5))
