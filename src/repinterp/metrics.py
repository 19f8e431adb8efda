"""Fidelity metrics for any heat maps, yours or repinterp's: one import.

>>> from repinterp.metrics import road, deletion_insertion, average_drop_increase
>>> road(model, images, heatmaps, cls)["combined"]          # higher is better

* :func:`road`: ROAD (MoRF, LeRF, combined) via pytorch-grad-cam
  (``pip install 'repinterp[eval]'``);
* :class:`QuantusExplainer`: region heat maps as a Quantus ``explain_func`` (refitted on
  the model Quantus hands it, as its randomisation tests need);
* :func:`deletion_insertion`: deletion and insertion curves and their areas;
* :func:`average_drop_increase` with :func:`keep_top` and a fill: ``0`` (the dataset
  mean in normalised space) or :func:`blur` of the images;
* :func:`paired_ci`: paired bootstrap confidence intervals over seeds;
* :func:`precision_at_k`, :func:`auroc`, :func:`heat_share`: slice discovery (how well a
  region or cluster matches a known group of images) and heat mass on a mask.
"""
from .app.fidelity import PERCENTILES, QuantusExplainer, road
from .core.metrics import (
    auroc,
    average_drop_increase,
    blur,
    deletion_insertion,
    heat_share,
    keep_top,
    paired_ci,
    precision_at_k,
    rank_pixels,
)

__all__ = ["PERCENTILES", "QuantusExplainer", "auroc", "average_drop_increase", "blur",
           "deletion_insertion", "heat_share", "keep_top", "paired_ci", "precision_at_k",
           "rank_pixels", "road"]
