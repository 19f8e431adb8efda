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

from typing import Any

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

    ``located=True`` explains a new image as ``explain --summary`` does: the references
    are summarised once per model (:meth:`~repinterp.RepresentativeInterpreter.summarize`,
    the defaults), and an input whose target is its predicted class and that falls in a
    region of the summary gets that region's heat map (:meth:`Summary.locate_features
    <repinterp.core.summary.Summary.locate_features>`); any other input its own region's,
    as without. A slightly perturbed input (MaxSensitivity's) then keeps the region of
    the original where it stays inside it. ``located_`` counts the inputs located,
    ``explained_`` every input drawn.

    A randomised model may predict no reference as the target (then the plain region,
    against every other class) or every reference as one class (then no region exists
    and the map is uniform, all ones: it says nothing, as Quantus refuses all-zero
    maps). A region map that is zero everywhere (no position adds to the margins; the
    biases carry the seed) is returned as that uniform map too. ``fallbacks_`` counts
    each kind.
    """

    def __init__(self, references: torch.Tensor, layer: str, *, located: bool = False,
                 **interpreter_kwargs):
        self.references = references
        self.layer = layer
        self.located = located
        self.interpreter_kwargs = {"progress": False, **interpreter_kwargs}
        self._cache: tuple[int, tuple, object] | None = None
        self._summary: tuple[Any, Any] | None = None
        self.fallbacks_ = {"target_not_predicted": 0, "one_class": 0, "zero_map": 0}
        self.located_ = 0
        self.explained_ = 0

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

    def _regions(self, interp, x: torch.Tensor, t: np.ndarray) -> list:
        """Per input, the summary region it falls in when located (else ``None``)."""
        if not self.located:
            return [None] * len(x)
        if self._summary is None or self._summary[0] is not interp:
            self._summary = (interp, interp.summarize())
        summary = self._summary[1]
        feats = interp.features(x)
        preds = interp.predict_features(feats)
        where = summary.locate_features(feats, preds).tolist()
        return [summary.regions[k] if k >= 0 and int(p) == int(c) else None
                for k, p, c in zip(where, preds.tolist(), t.tolist(), strict=True)]

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray,
                 **_: object) -> np.ndarray:
        interp = self.interpreter(model)
        x = torch.as_tensor(np.asarray(inputs), dtype=self.references.dtype)
        t = np.asarray(targets).reshape(-1)
        predicted = set(interp.predictions_.tolist())
        found = self._regions(interp, x, t) if len(predicted) >= 2 else [None] * len(x)
        maps = []
        for img, c, region in zip(x, t, found, strict=True):
            if len(predicted) < 2:
                self.fallbacks_["one_class"] += 1
                maps.append(torch.ones(x.shape[-2:]))
                continue
            target = int(c) if int(c) in predicted else None
            self.fallbacks_["target_not_predicted"] += target is None
            self.located_ += region is not None
            self.explained_ += 1
            if region is None:
                region = interp.explain(img, target=target)
            heat = interp.heatmap(region, img[None])[0]
            if not bool((heat > 0).any()):
                self.fallbacks_["zero_map"] += 1
                heat = torch.ones_like(heat)
            maps.append(heat)
        return torch.stack(maps)[:, None].float().numpy()
