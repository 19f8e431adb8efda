"""The operations of :class:`~repinterp.core.interpreter.RepresentativeInterpreter` on
images, as a mixin: features, predictions, membership, ranking and heat maps through the
private network made at ``fit``, and a seed given as an image recognised as the
reference it is."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .contrast import Crossing, crossings
from .counterfactual import (
    Counterfactual,
    interpolation_edit,
    margin_edit,
    nearest_boundary,
    region_edit,
)
from .errors import UserError
from .precision import exact
from .region import Region

if TYPE_CHECKING:
    from .network import SplitNetwork
    from .store import FeatureStore
    from .summary import Summary

__all__ = ["ImagesMixin"]


class ImagesMixin:
    """What a fitted interpreter does with images (mixed into
    :class:`~repinterp.core.interpreter.RepresentativeInterpreter`)."""

    if TYPE_CHECKING:                   # set by RepresentativeInterpreter
        heatmap_method: str
        heatmap_grid: str
        _network: SplitNetwork
        _store: FeatureStore
        logits_: torch.Tensor
        predictions_: torch.Tensor
        input_size_: tuple[int, ...]

        def _fitted(self, stacklevel: int = 3) -> ImagesMixin: ...

        def explain(self, seed: Any, *, delta: int | None = None,
                    num_boundaries: int | None = None, target: int | None = None
                    ) -> Region: ...

    # --- a seed: an index or an image ----------------------------------------------
    def _seed(self, seed: Any) -> tuple[int | None, torch.Tensor, int]:
        """Index (or None), flattened features and predicted class of a seed. An image
        whose features and logits are those of a reference (to the float noise of
        another batch size) *is* that reference: it gets the reference's index, and so
        its region (``explain(refs[i])`` and ``explain(i)`` agree)."""
        if isinstance(seed, np.ndarray):
            seed = torch.from_numpy(seed)
        if isinstance(seed, torch.Tensor) and seed.ndim == 3:
            z0 = self._network.features(seed[None], progress=False)[0]
            logits = self._network.logits(z0[None])
            index = self._same_reference(z0, logits[0])
            if index is not None:
                return index, self._store.rows(index), int(self.predictions_[index])
            return None, z0, int(logits.argmax(1))
        try:
            index = operator.index(seed.item()  # type: ignore[arg-type]
                                   if isinstance(seed, torch.Tensor)
                                   and seed.ndim == 0 else seed)
        except TypeError:
            index = None
        if index is None or isinstance(seed, bool) or (
                isinstance(seed, torch.Tensor) and seed.dtype == torch.bool):
            raise UserError("seed must be a reference index (an integer), an image "
                            "[C, H, W] or a batch of images [n, C, H, W]") from None
        if not 0 <= index < len(self._store):
            raise UserError(f"seed index {index} out of range 0..{len(self._store) - 1}")
        return index, self._store.rows(index), int(self.predictions_[index])

    def _same_reference(self, z0: torch.Tensor, logits: torch.Tensor) -> int | None:
        """The first reference whose logits and features equal ``z0``'s within
        ``sqrt(eps) * max(1, max|.|)`` (the float noise of a different batch), or None.
        The logits narrow the candidates; only those are compared in full."""
        tol = float(torch.finfo(logits.dtype).eps) ** 0.5
        ref = self.logits_
        close = ((ref - logits.to(ref)).abs().amax(1)
                 <= tol * max(1.0, float(logits.abs().max()))).nonzero()[:, 0]
        for i in close.tolist()[:64]:
            row = self._store.rows(i).to(z0)
            if float((row - z0).abs().max()) <= tol * max(1.0, float(z0.abs().max())):
                return int(i)
        return None

    # --- operations on images ------------------------------------------------------
    @exact
    def features(self, images: Any, *, flat: bool = True,
                 progress: bool | None = None) -> torch.Tensor:
        """``psi(images)``: ``[n, D]`` (``[n, C, H, W]`` with ``flat=False``), batched,
        through the private copy made at :meth:`fit`."""
        return self._fitted(stacklevel=4)._network.features(images, flat=flat,
                                                            progress=progress)

    @exact
    def predict(self, images: Any, *, logits: bool = False,
                progress: bool | None = None) -> torch.Tensor:
        """``Class(x)`` ``[n]`` of images (CPU), or with ``logits`` their logits
        ``G(psi(x))`` ``[n, K]``: one batched pass of each half of the network."""
        net = self._fitted(stacklevel=4)._network
        return self.predict_features(net.features(images, progress=progress), logits=logits)

    @exact
    def predict_features(self, features: torch.Tensor, *, logits: bool = False
                         ) -> torch.Tensor:
        """:meth:`predict` from features ``[n, D]`` already computed (:meth:`features`):
        the head alone."""
        out = self._fitted(stacklevel=4)._network.logits(features)
        return out if logits else out.argmax(1).cpu()

    @exact
    def locate(self, summary: Summary, images: Any) -> torch.Tensor:
        """For each image, the position in ``summary.regions`` of the region it falls in
        (the largest of its predicted class that holds it), or -1
        (:meth:`Summary.locate_features`)."""
        z = self._fitted(stacklevel=4)._network.features(images, progress=False)
        return summary.locate_features(z, self.predict_features(z))

    @property
    def feature_shape_(self) -> tuple[int, ...]:
        """Shape of one feature map at the layer, ``(C, H, W)``, fixed at :meth:`fit`."""
        return self._fitted()._shape()

    def _shape(self) -> tuple[int, ...]:
        shape = self._network.feature_shape
        assert shape is not None                     # set by fit's first pass
        return tuple(shape)

    @exact
    def contains(self, region: Region, images: Any) -> torch.Tensor:
        """Bool ``[n]``: which images fall inside ``region``."""
        return self._fitted(stacklevel=4)._network.contains(region, images)

    @exact
    def rank(self, region: Region, images: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the images inside ``region``, nearest to its seed first, and their
        semantic distances; images outside are left out."""
        return self._fitted(stacklevel=4)._network.rank(region, images)

    @exact
    def across(self, region: Region, k: int = 8) -> list[Crossing]:
        """For each boundary of ``region``, the references outside it by that boundary
        alone, nearest first (``k`` of them), with what the model predicts for them: its
        contrastive neighbours (:mod:`repinterp.core.contrast`). One product over the
        stored features; ``region`` must come from this model and layer."""
        store = self._fitted(stacklevel=4)._store
        if region.weights.shape[1:] != store.z.shape[1:]:
            raise UserError(f"this region has {region.weights.shape[1]} features per "
                            f"image and the interpreter's layer {store.z.shape[1]}: "
                            "it comes from another model or layer")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise UserError(f"k must be a non-negative integer, got {k!r}")
        side = store.feature_side_values(region.weights, region.biases)
        return crossings(side, self.predictions_, region.pairs, region.members, k)

    @exact
    def counterfactual(self, image: Any, region: Region | None = None, *,
                       target: int | None = None, via: str = "region", steps: int = 50,
                       smooth: float = 1.0, towards: Any = None) -> Counterfactual:
        """A small edit of ``image`` ``[C, H, W]`` that the model decides otherwise
        (:mod:`repinterp.core.counterfactual`; deterministic).

        ``via="region"`` (default): across the nearest boundary of its region
        (``region``, default ``explain(image)``; against class ``target`` when given),
        DeepFool steps on the boundary's side value through the feature extractor's
        gradient, smoothed over ``smooth`` pixels, at most ``steps``. The baselines:
        ``via="logits"``, the same steps on the logit margin towards ``target`` (default:
        the class of the region's nearest boundary) without the region; ``via="blend"``,
        the first blend ``(1 - t) image + t towards`` the model decides otherwise.
        """
        self._fitted(stacklevel=4)
        x = self._one_image(image, "counterfactual")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"steps must be a positive integer, got {steps!r}")
        net = self._network
        x = x.to(net.device, net.dtype)
        if via == "blend":
            if towards is None:
                raise UserError("via='blend' needs towards=, the image to blend towards")
            y = self._one_image(towards, "towards").to(x)
            return interpolation_edit(net, x, y, int(self.predict(x[None])[0]))
        if via not in ("region", "logits"):
            raise UserError(f"via must be 'region', 'logits' or 'blend', got {via!r}")
        region = self.explain(x) if region is None else region
        if via == "region":
            return region_edit(net, region, x, target=target, steps=steps,
                               smooth=float(smooth))
        aim = int(region.pairs[nearest_boundary(net, region, x, target), 1])
        return margin_edit(net, x, int(self.predict(x[None])[0]), aim, steps=steps,
                           smooth=float(smooth))

    @staticmethod
    def _one_image(image: Any, what: str) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(image)) if isinstance(image, np.ndarray) else image
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
            raise UserError(f"{what} takes one image, a float tensor [C, H, W]")
        return x

    @exact
    def reference_heatmap(self, region: Region, indices: Any,
                          method: str | None = None) -> torch.Tensor:
        """Heat maps ``[n, H, W]`` of fitted references (``indices``) from their stored
        features: the same maps as ``heatmap(region, references[indices])`` without a
        pass through the feature extractor (what a report of thousands of members
        needs at 224x224)."""
        self._fitted(stacklevel=4)
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        net = self._network
        maps = net.unflatten(self._store.rows(idx.to(self._store.z.device)))
        return net.heatmap_of_features(region, maps, self.input_size_,
                                       method or self.heatmap_method, self.heatmap_grid)

    @exact
    def heatmap(self, region: Region, images: Any, method: str | None = None) -> torch.Tensor:
        """Heat maps ``[n, H, W]`` in ``[0, 1]``: the same region weights for every image
        (see :mod:`repinterp.core.heatmap`; default ``heatmap_method``)."""
        net = self._fitted(stacklevel=4)._network
        return net.heatmap(region, images, method or self.heatmap_method, self.heatmap_grid)
