"""Every default that changes a result, defined once.

The library (:class:`~repinterp.RepresentativeInterpreter`, the region index), the
pipelines, the command line and the demo read these names; nothing else spells the
values (a test scans the package for parameters of these names with literal defaults).
The demo passes its own ``num_boundaries`` explicitly.

- ``COVERAGE``: share of each predicted class a summary covers before it stops.
- ``MAX_REGIONS``: regions per class at most.
- ``NUM_BOUNDARIES``: |Q|, boundaries sampled per seed (the paper's 50).
- ``MAX_LOGICS``: decision logics per class at most, with ``separate_logics``.
- ``HEATMAP_METHOD`` / ``HEATMAP_GRID``: the region heat map and the grid it is drawn on.
- ``TARGET_PURITY`` / ``HOLDOUT``: a summary's purity contract, the purity its regions
  meet on the share ``HOLDOUT`` of references held out (:mod:`repinterp.core.contract`).
- ``MIN_PURITY`` / ``TANGENT_MIN_PURITY``: the greedy's purity stop for exact and tangent
  boundaries (chosen by measurement: ``docs/tangent-curve.md``, ``docs/index.md``).
"""
from __future__ import annotations

__all__ = ["COVERAGE", "HEATMAP_GRID", "HEATMAP_METHOD", "MAX_LOGICS", "MAX_REGIONS",
           "MIN_PURITY", "NUM_BOUNDARIES", "RAY_WAIT_S", "TANGENT_MIN_PURITY",
           "HOLDOUT", "TARGET_PURITY"]

COVERAGE: float = 0.9
MAX_REGIONS: int = 6
NUM_BOUNDARIES: int = 50
MAX_LOGICS: int = 4
HEATMAP_METHOD: str = "margin"
HEATMAP_GRID: str = "features"
MIN_PURITY: float = 0.995
TANGENT_MIN_PURITY: float = 0.999
TARGET_PURITY: float = 0.99
HOLDOUT: float = 0.2
#: seconds to wait for a Ray cluster at ``--ray-address`` to answer before giving up
RAY_WAIT_S: float = 30.0
