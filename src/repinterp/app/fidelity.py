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

from ..core.copies import inference_mode

__all__ = ["PERCENTILES", "QuantusExplainer", "road"]

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


class QuantusExplainer:
    """A Quantus ``explain_func``: the region heat map of every input, from an
    interpreter fitted on the model Quantus hands it.

    >>> explain = QuantusExplainer(references, layer="features")
    >>> quantus.MPRT()(model=model, x_batch=x, y_batch=y, explain_func=explain)

    ``explain(model, inputs, targets)`` fits a :class:`repinterp.RepresentativeInterpreter`
    on ``model`` and ``references`` (once per model and weights: Quantus' randomisation
    tests hand it randomised copies, each refitted), explains each input as a seed
    against its target class (``explain(x, target=t)``: the plain region when ``t`` is
    the predicted class) and returns the heat maps ``[n, 1, H, W]`` (numpy, float32).
    ``interpreter_kwargs`` go to the interpreter (``num_boundaries``, ``seed``, ...).

    A randomised model may predict no reference as the target (then the plain region,
    against every other class) or every reference as one class (then no region exists
    and the map is uniform, all ones: it says nothing, as Quantus refuses all-zero
    maps). A region map that is zero everywhere (no position adds to the margins; the
    biases carry the seed) is returned as that uniform map too. ``fallbacks_`` counts
    each kind.
    """

    def __init__(self, references: torch.Tensor, layer: str, **interpreter_kwargs):
        self.references = references
        self.layer = layer
        self.interpreter_kwargs = {"progress": False, **interpreter_kwargs}
        self._cache: tuple[int, tuple, object] | None = None
        self.fallbacks_ = {"target_not_predicted": 0, "one_class": 0, "zero_map": 0}

    def interpreter(self, model: nn.Module):
        """The interpreter fitted on ``model`` as it is now (refitted when ``model`` or
        its weights changed since the last call)."""
        from ..core.copies import model_fingerprint
        from ..core.interpreter import RepresentativeInterpreter

        key = (id(model), model_fingerprint(model))
        if self._cache is None or self._cache[:2] != key:
            interp = RepresentativeInterpreter(model, self.layer, **self.interpreter_kwargs)
            self._cache = (*key, interp.fit(self.references))
        return self._cache[2]

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray,
                 **_: object) -> np.ndarray:
        interp = self.interpreter(model)
        x = torch.as_tensor(np.asarray(inputs), dtype=self.references.dtype)
        t = np.asarray(targets).reshape(-1)
        predicted = set(interp.predictions_.tolist())
        maps = []
        for img, c in zip(x, t, strict=True):
            if len(predicted) < 2:
                self.fallbacks_["one_class"] += 1
                maps.append(torch.ones(x.shape[-2:]))
                continue
            target = int(c) if int(c) in predicted else None
            self.fallbacks_["target_not_predicted"] += target is None
            heat = interp.heatmap(interp.explain(img, target=target), img[None])[0]
            if not bool((heat > 0).any()):
                self.fallbacks_["zero_map"] += 1
                heat = torch.ones_like(heat)
            maps.append(heat)
        return torch.stack(maps)[:, None].float().numpy()
