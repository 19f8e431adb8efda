"""A decision region: the representative interpretation of one seed (METHOD §2-4).

A :class:`Region` is a plain value (tensors and numbers): it pickles small, can be saved
and loaded, and knows nothing of the network. What needs the network (``contains``,
``rank`` and ``heatmap`` on *images*) goes through
:class:`repinterp.RepresentativeInterpreter`; here everything works on features.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch

from . import defaults
from .errors import UserError
from .heatmap import heatmap_method, region_heatmap

__all__ = ["Region", "check_class_names"]


def check_class_names(names: Sequence[str] | None, classes: int) -> None:
    """Refuse class ``names`` (``None``: none given) that are not ``classes`` strings."""
    if names is None:
        return
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise UserError("class_names must be a sequence of strings, one per class")
    if len(names) != int(classes):
        raise UserError(f"class_names has {len(names)} names for a model with "
                        f"{int(classes)} classes")


@dataclass
class Region:
    """The region of a seed: a convex cell of feature space cut by the selected boundaries.

    Attributes
    ----------
    predicted_class
        ``Class(x)`` of the seed.
    weights, biases
        ``[P, D]``, ``[P]``: the selected boundaries in flattened feature space, oriented
        so that the seed has ``w . psi(x) + b >= 0``. An image is inside when that holds
        for every boundary.
    boundary_points
        ``[P, D]``: where each boundary was sampled (``[0, D]`` in a region read from a
        ``summary.pt`` of a heat map that does not need them: only ``logprob`` does).
    pairs
        ``[P, 2]``: the classes ``(c1, c2)`` of each boundary, ``weights[p]`` being
        ``grad (G_c1 - G_c2)`` at its point.
    delta, min_delta
        Other-class references allowed inside, and the smallest feasible value.
    members
        Reference indices inside the region, ranked by semantic distance (ascending).
    member_distances
        ``Dist(x, x') = sum_h |w_h . psi(x) - w_h . psi(x')|`` of each member.
    purity
        Share of members predicted as ``predicted_class``.
    seed_index
        Index of the seed in the references, or ``None`` for an outside image.
    seed_values
        ``[P]``: ``w_h . psi(x) + b_h`` of the seed (all ``>= 0``), the origin of the
        semantic distance.
    feature_shape
        Shape of one feature map, ``(C, H, W)``.
    approximate
        True when the head is not piecewise linear and the boundaries are only local
        linearisations.
    logic
        With ``summarize(separate_logics=True)``: which logic of its class the region
        explains (0 = the largest; :mod:`repinterp.core.logics`), else ``None``.
    min_purity
        The greedy's purity stop the region was grown with (``None``: the paper's
        ``delta`` rule alone).
    class_name
        The name of ``predicted_class``, for display (``None``: the class is shown by its
        index); set by an interpreter given ``class_names``.
    holdout
        With a purity contract (``summarize(target_purity=...)``,
        :mod:`repinterp.core.contract`): ``(inside, pure)``, the held-out references
        inside the region (which it was not grown on) and how many of them are predicted
        as ``predicted_class``; else ``None``.
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
    seed_values: torch.Tensor
    feature_shape: tuple[int, ...]
    approximate: bool = False
    logic: int | None = None
    min_purity: float | None = None
    class_name: str | None = None
    holdout: tuple[int, int] | None = None

    @property
    def holdout_purity(self) -> float | None:
        """Share of the held-out references inside predicted as the region's class
        (:attr:`holdout`; ``None`` without a contract or when none falls inside)."""
        if self.holdout is None or self.holdout[0] == 0:
            return None
        return self.holdout[1] / self.holdout[0]

    @property
    def size(self) -> int:
        """Number of references inside the region."""
        return len(self.members)

    def named(self, class_names: Sequence[str] | None) -> Region:
        """This region with :attr:`class_name` set from ``class_names`` (one per class;
        ``None`` leaves it as it is); returns the region itself."""
        if class_names is not None and 0 <= self.predicted_class < len(class_names):
            self.class_name = str(class_names[self.predicted_class])
        return self

    @property
    def class_label(self) -> str:
        """The class in words: ``"Ankle boot (class 9)"``, or ``"class 9"`` without a
        name."""
        k = self.predicted_class
        return f"{self.class_name} (class {k})" if self.class_name else f"class {k}"

    def _repr_html_(self) -> str:
        """A notebook's view: the region's facts and its closest members (indices; draw
        them with :func:`repinterp.app.notebook.show`). Self-contained HTML."""
        seed = "an outside image" if self.seed_index is None else f"reference {self.seed_index}"
        rows = [("class", self.class_label), ("members", self.size),
                ("purity", f"{100 * self.purity:.1f}%"),
                ("boundaries", self.num_boundaries), ("delta", self.delta),
                ("seed", seed), ("closest members", ", ".join(
                    str(i) for i in self.members[:10].tolist()) or "none")]
        if self.logic is not None:
            rows.insert(1, ("logic", self.logic))
        if self.holdout is not None:
            rows.insert(4, ("held-out purity", "no held-out reference inside"
                            if self.holdout_purity is None else
                            f"{100 * self.holdout_purity:.1f}% of {self.holdout[0]}"))
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                        f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f"<table><caption>Region</caption>{cells}</table>"

    def __repr__(self) -> str:
        seed = "outside image" if self.seed_index is None else f"seed {self.seed_index}"
        logic = "" if self.logic is None else f", logic {self.logic}"
        return (f"Region({self.class_label}, {self.size} members, purity "
                f"{self.purity:.3f}, {self.num_boundaries} boundaries, delta {self.delta}, "
                f"{seed}{logic}{', approximate' if self.approximate else ''})")

    @property
    def num_boundaries(self) -> int:
        return len(self.weights)

    def to_dict(self) -> dict:
        """Plain data (tensors, numbers, tuples): ``torch.save`` it, load it with
        ``weights_only=True`` and rebuild with :meth:`from_dict`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Region:
        data = dict(data, feature_shape=tuple(data["feature_shape"]))
        if data.get("holdout") is not None:
            data["holdout"] = tuple(data["holdout"])
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    # --- on features -------------------------------------------------------------
    def side_values(self, features: torch.Tensor) -> torch.Tensor:
        """``w . z + b`` for flattened features ``[n, D]`` -> ``[n, P]``."""
        w = self.weights.to(features.device, features.dtype)
        return features.flatten(1) @ w.T + self.biases.to(features.device, features.dtype)

    def contains_features(self, features: torch.Tensor) -> torch.Tensor:
        """Bool ``[n]``: which feature vectors lie inside the region."""
        return (self.side_values(features) >= 0).all(1)

    def distances_features(self, features: torch.Tensor) -> torch.Tensor:
        """Semantic distance of each feature vector to the seed."""
        seed = self.seed_values.to(features.device, features.dtype)
        return (self.side_values(features) - seed).abs().sum(1)

    def rank_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the feature vectors inside the region, nearest first, and their
        semantic distances."""
        inside = self.contains_features(features).nonzero()[:, 0]
        dist = self.distances_features(features[inside])
        order = torch.sort(dist, stable=True).indices
        return inside[order].cpu(), dist[order].cpu()

    def slice_scores(self, features: torch.Tensor) -> torch.Tensor:
        """A score of *every* feature vector ``[n]`` (float64, higher first) that ranks
        the members first, nearest to the seed first, then the rest by the number of
        boundaries they violate (fewest first) and then by semantic distance: the
        region as a ranking of all images, for :func:`repinterp.metrics.precision_at_k`
        and :func:`repinterp.metrics.auroc`. The score is minus the position in that
        order (ties by index)."""
        side = self.side_values(features)
        violated = (side < 0).sum(1).double().cpu()
        dist = (side - self.seed_values.to(side.device, side.dtype)).abs().sum(1)
        dist = dist.double().cpu()
        order = torch.sort(dist, stable=True).indices
        order = order[torch.sort(violated[order], stable=True).indices]
        scores = torch.empty(len(order), dtype=torch.float64)
        scores[order] = -torch.arange(len(order), dtype=torch.float64)
        return scores

    def heatmap_features(self, feature_maps: torch.Tensor, size: tuple[int, int],
                         method: str = defaults.HEATMAP_METHOD,
                         normals: torch.Tensor | None = None,
                         grid: tuple[int, int] | None = None,
                         reshape: Callable[[torch.Tensor], torch.Tensor] | None = None
                         ) -> torch.Tensor:
        """Heat maps ``[n, H, W]`` of feature maps ``[n, C, h, w]`` (or tokens, or what
        ``reshape`` makes into such maps)
        (:func:`repinterp.core.heatmap.region_heatmap`). ``normals`` replaces the
        boundary normals (``logprob`` needs the class gradients at the boundary points,
        which :meth:`RepresentativeInterpreter.heatmap` computes); ``grid`` is the head's
        grid (:attr:`repinterp.core.network.SplitNetwork.head_grid`), which the
        interpreter passes."""
        if heatmap_method(method).needs_class_gradients and normals is None:
            raise ValueError(f"the {method} heat map needs the class gradients at the "
                             "boundary points: use RepresentativeInterpreter.heatmap")
        if normals is not None and len(normals) != self.num_boundaries:
            raise UserError(f"the {method} heat map needs the region's boundary points, "
                            "and this region was read from a summary.pt saved without "
                            "them (they are kept for the logprob heat map only): draw "
                            "its heat maps with the summary's own method, or summarize "
                            f"again with heatmap_method={method!r}")
        w = self.weights if normals is None else normals
        w = w.to(feature_maps.device, feature_maps.dtype).reshape(-1, *feature_maps.shape[1:])
        return region_heatmap(w, feature_maps, size, method, grid, reshape)
