"""`make bench` reports every ratio that got worse than the committed results."""
import copy
import json
from pathlib import Path

import benchmarks.run as bench


def test_regressions_name_what_got_worse_beyond_the_noise():
    committed = json.loads((Path(__file__).parents[1] / "docs/performance.json").read_text())
    same = copy.deepcopy(committed)
    assert bench.regressions(committed, same) == []
    worse = copy.deepcopy(committed)
    worse["scaling"][0]["explain_over_fit"] *= 1 + 2 * bench.NOISE   # lower is better
    worse["heatmaps"]["gradcam_over_ours"] /= 1 + 2 * bench.NOISE    # higher is better
    worse["scaling"][1]["fit_over_bare"] *= 1 + bench.NOISE / 2      # within the noise
    better = copy.deepcopy(committed)
    better["scaling"][0]["explain_over_fit"] /= 3
    n = committed["scaling"][0]["n"]
    lines = bench.regressions(committed, worse)
    assert len(lines) == 2
    assert f"/scaling[{n}]/explain_over_fit" in lines[1]
    assert "/heatmaps/gradcam_over_ours" in lines[0]
    assert bench.regressions(committed, better) == []
