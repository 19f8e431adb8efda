"""ROAD (Rong et al., ICML 2022) through pytorch-grad-cam, the implementation people use.

ROAD removes pixels by *noisy linear imputation* (each removed pixel the weighted mean of
its neighbours, solved as one sparse linear system, plus noise of standard deviation
0.01) instead of a constant fill, so that removal does not push images out of
distribution. For each percentile ``p``, MoRF removes the pixels at or above the
``p``-th percentile of the heat map (the most relevant ``100 - p`` %) and LeRF those at or
below the ``(100 - p)``-th; the score is the change of the softmax probability of the
class, averaged over the percentiles. ``combined = (LeRF - MoRF) / 2``: higher is better.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.network import inference_mode

__all__ = ["PERCENTILES", "road"]

#: pytorch-grad-cam's defaults, used here.
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def road(model: nn.Module, images: torch.Tensor, heat: torch.Tensor,
         cls: int | torch.Tensor, *, percentiles: tuple[int, ...] = PERCENTILES,
         seed: int = 0) -> dict[str, np.ndarray]:
    """Per image: ``morf``, ``lerf`` and ``combined`` ROAD scores of heat maps ``heat``
    ``[n, H, W]`` for class ``cls``, with pytorch-grad-cam's ``ROADMostRelevantFirst
    Average``, ``ROADLeastRelevantFirstAverage`` and ``ClassifierOutputSoftmaxTarget``.

    The imputation's noise is drawn from torch's global generator: it runs under
    ``torch.random.fork_rng`` seeded with ``seed`` (the caller's generator is left as it
    was; the same seed gives the same scores). Needs ``pip install 'repinterp[eval]'``.
    """
    from pytorch_grad_cam.metrics.road import (
        ROADLeastRelevantFirstAverage,
        ROADMostRelevantFirstAverage,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    classes = torch.as_tensor(cls).expand(len(images)).tolist()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    cams = heat.detach().float().cpu().numpy()
    with torch.random.fork_rng(devices=[]), inference_mode(model):
        torch.manual_seed(seed)
        morf = ROADMostRelevantFirstAverage(list(percentiles))(images, cams, targets, model)
        lerf = ROADLeastRelevantFirstAverage(list(percentiles))(images, cams, targets, model)
    return {"morf": morf, "lerf": lerf, "combined": (lerf - morf) / 2}
