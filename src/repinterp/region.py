"""A decision region: the representative interpretation of one seed (METHOD §2-4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .heatmap import region_heatmap

if TYPE_CHECKING:
    from .interpreter import RepresentativeInterpreter

__all__ = ["RegionExplanation"]


@dataclass
class RegionExplanation:
    """The region of a seed: a convex cell cut by the selected boundaries.

    Attributes
    ----------
    predicted_class
        ``Class(x)`` of the seed.
    weights, biases
        ``[P, D]``, ``[P]``: selected boundaries, oriented so that the seed has
        ``w . psi(x) + b >= 0``. An image is inside when that holds for every boundary.
    boundary_points
        ``[P, D]``: where each boundary was sampled.
    delta, min_delta
        Other-class references allowed inside the region, and the smallest feasible value.
    members
        Reference indices inside the region, ranked by semantic distance (ascending).
    member_distances
        Their semantic distances ``Dist(x, x') = sum_h |w_h . (psi(x) - psi(x'))|``.
    purity
        Share of members predicted as ``predicted_class``.
    seed_index
        Index of the seed in the references, or ``None`` for an outside image.
    approximate
        True when the head is not piecewise linear and the boundaries are only local
        linearisations.
    """

    predicted_class: int
    weights: torch.Tensor
    biases: torch.Tensor
    boundary_points: torch.Tensor
    pairs: torch.Tensor
    delta: int
    min_delta: int
    members: torch.Tensor
    member_distances: torch.Tensor
    purity: float
    seed_index: int | None
    seed_features: torch.Tensor
    approximate: bool = False
    interpreter: "RepresentativeInterpreter | None" = field(default=None, repr=False)
    _class_gradients: torch.Tensor | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Number of references inside the region."""
        return len(self.members)

    @property
    def num_boundaries(self) -> int:
        return len(self.weights)

    # --- on features -------------------------------------------------------------
    def side_values(self, features: torch.Tensor) -> torch.Tensor:
        """``w . z + b`` for flattened features ``[n, D]`` -> ``[n, P]``."""
        w = self.weights.to(features.device, features.dtype)
        return features.flatten(1) @ w.T + self.biases.to(features.device, features.dtype)

    def contains_features(self, features: torch.Tensor) -> torch.Tensor:
        return (self.side_values(features) >= 0).all(1)

    def distances_features(self, features: torch.Tensor) -> torch.Tensor:
        """Semantic distance of each feature vector to the seed."""
        w = self.weights.to(features.device, features.dtype)
        z0 = self.seed_features.to(features.device, features.dtype)
        return ((features.flatten(1) - z0) @ w.T).abs().sum(1)

    def rank_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = self.contains_features(features).nonzero()[:, 0]
        dist = self.distances_features(features[inside])
        order = torch.sort(dist, stable=True).indices
        return inside[order].cpu(), dist[order].cpu()

    @property
    def class_gradients(self) -> torch.Tensor:
        """``[P, D]``: ``grad_z log softmax(G(z))_c`` at each boundary point."""
        if self._class_gradients is None:
            self._class_gradients = self.interpreter.class_gradients(
                self.boundary_points, self.predicted_class)
        return self._class_gradients

    def heatmap_features(self, features: torch.Tensor, size: tuple[int, int],
                         method: str | None = None) -> torch.Tensor:
        """Heat maps ``[n, H, W]`` of feature maps ``[n, C, h, w]``; see
        :mod:`repinterp.heatmap` for the methods."""
        method = method or (self.interpreter.heatmap_method if self.interpreter else "lineage")
        normals = self.class_gradients if method == "logprob" else self.weights
        w = normals.to(features.device, features.dtype).reshape(-1, *features.shape[1:])
        return region_heatmap(w, features, size, method)

    # --- on images ---------------------------------------------------------------
    def _features(self, images: Any) -> torch.Tensor:
        if self.interpreter is None:
            raise RuntimeError("this explanation is not attached to an interpreter")
        return self.interpreter.features(images, progress=False)

    def contains(self, images: Any) -> torch.Tensor:
        """Bool ``[n]``: which images fall inside the region."""
        return self.contains_features(self._features(images)).cpu()

    def rank(self, images: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the images inside the region and their semantic distances,
        ascending; images outside are left out."""
        return self.rank_features(self._features(images))

    def heatmap(self, images: Any, method: str | None = None) -> torch.Tensor:
        """Heat maps ``[n, H, W]`` in ``[0, 1]``, the same region weights for every image."""
        images = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
        if images.ndim == 3:
            images = images.unsqueeze(0)
        feats = self.interpreter.features(images, progress=False, flat=False)
        return self.heatmap_features(feats, tuple(images.shape[-2:]), method).cpu()
