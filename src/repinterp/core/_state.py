"""A fitted interpreter's state as plain tensors, and a fit restored from it, as a mixin
of :class:`~repinterp.core.interpreter.RepresentativeInterpreter`: what a fit cache
saves (:meth:`StateMixin.fit_state_`) and gives back (``fit(references, state=...)``).

The state is what ``fit`` computed from every reference: the stored features, the
head's prefix projections when the store works in a projected space
(:mod:`repinterp.core.store`), the logits, the input and feature shapes, the layer and a
format version. A restore trusts none of it by name: it computes the features, the
projections and the logits of the first :data:`CHECK_ROWS` references again (the first
batch ``fit`` reads, after the usual check of the split) and compares them with the
saved rows, to ``sqrt(eps)`` of the coarser of the stored and the model's dtype times
their size. Anything that differs (another model, other images, another layer or
size, another dtype, a state of another format) is not an error but a miss: ``fit``
then fits from the references as it does without a state (``restored_`` says which).
A restored interpreter holds the saved rows themselves, so that it gives the very
results of the fit that saved them (with ``store_dir``, the features stay where the
state holds them, in memory on the CPU).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .boundaries import Boundaries, boundaries_at
from .passes import decisions
from .region import check_class_names
from .split import linear_prefix, split_model
from .store import FeatureStore

if TYPE_CHECKING:
    import os

    from .network import SplitNetwork

__all__ = ["CHECK_ROWS", "FIT_STATE_VERSION", "StateMixin"]

#: the format of :meth:`StateMixin.fit_state_` (a state of another format is a miss)
FIT_STATE_VERSION = 1
#: references computed again, and compared with the saved rows, on a restore
CHECK_ROWS = 4


def _close(got: torch.Tensor, saved: Any, dtype: torch.dtype) -> bool:
    """``got`` equals ``saved`` (same shape and dtype) within ``sqrt(eps)`` of the
    coarser of its dtype and ``dtype``, times ``max(1, max|saved|)``."""
    if not isinstance(saved, torch.Tensor) or saved.shape != got.shape \
            or saved.dtype != got.dtype:
        return False
    eps = max(torch.finfo(got.dtype).eps, torch.finfo(dtype).eps)
    a, b = got.detach().cpu().double(), saved.detach().cpu().double()
    if not bool(torch.isfinite(a).all()) or not bool(torch.isfinite(b).all()):
        return False
    if not a.numel():
        return True
    return float((a - b).abs().max()) <= eps ** 0.5 * max(1.0, float(b.abs().max()))


class StateMixin:
    """The fitted state of an interpreter, saved and restored (mixed into
    :class:`~repinterp.core.interpreter.RepresentativeInterpreter`)."""

    if TYPE_CHECKING:                   # set by RepresentativeInterpreter
        sampling: str
        class_names: Any
        num_boundaries: int
        feature_dtype: torch.dtype | None
        store_dir: str | os.PathLike | None
        use_prefix: bool
        _network: SplitNetwork
        _store: FeatureStore
        logits_: torch.Tensor
        bank_: Boundaries | None
        bank_values_: torch.Tensor | None

        def _fitted(self, stacklevel: int = 3) -> StateMixin: ...
        def _rng(self, stream: int) -> torch.Generator: ...
        def _working_shape(self) -> tuple[int, ...]: ...

    def fit_state_(self) -> dict:
        """The fitted state as plain data (tensors on the CPU, numbers, strings): what
        ``fit(references, state=...)`` restores from without a pass over the references.
        Its keys: ``format`` (:data:`FIT_STATE_VERSION`), ``layer``, ``input_shape``,
        ``feature_shape``, ``features`` ``[N, D]`` (the stored dtype), ``projected``
        ``[N, out]`` (the head's first linear layer's outputs, or None), ``logits``
        ``[N, K]``. Tensors already on the CPU are shared, not copied."""
        self._fitted()
        net, store = self._network, self._store
        assert net.input_shape is not None and net.feature_shape is not None
        return {"format": FIT_STATE_VERSION, "layer": net.layer,
                "input_shape": [int(s) for s in net.input_shape],
                "feature_shape": [int(s) for s in net.feature_shape],
                "features": store.z.cpu(),
                "projected": None if store.projected is None else store.projected.cpu(),
                "logits": self.logits_.cpu()}

    def _restore(self, state: Any, net: SplitNetwork, first: torch.Tensor, count: int
                 ) -> tuple[FeatureStore, torch.Tensor] | None:
        """The store and the logits of ``state`` for ``count`` references whose first
        batch is ``first``, when its rows for ``first`` are what ``net`` computes for
        them now (the module's check); None otherwise (a miss). ``net`` has checked its
        split already; this pass over ``first`` is its first features pass."""
        try:
            z_all, logits_all = state["features"], state["logits"]
            p_all = state.get("projected")
            plain = (state.get("format") == FIT_STATE_VERSION
                     and state.get("layer") == net.layer
                     and isinstance(z_all, torch.Tensor) and z_all.ndim == 2
                     and isinstance(logits_all, torch.Tensor) and logits_all.ndim == 2
                     and len(z_all) == len(logits_all) == count
                     and (p_all is None or isinstance(p_all, torch.Tensor)
                          and p_all.ndim == 2 and len(p_all) == count))
            shapes = [list(state["input_shape"]), list(state["feature_shape"])]
        except (AttributeError, KeyError, TypeError):
            return None
        if not plain or len(first) > count:
            return None
        k = len(first)
        z = net.features(first, dtype=self.feature_dtype, progress=False)
        prefix = linear_prefix(net.head) if self.use_prefix else None
        sink: list[torch.Tensor] = []
        logits = net.logits(z, capture=prefix, sink=sink)
        assert net.input_shape is not None and net.feature_shape is not None
        if shapes != [list(net.input_shape), list(net.feature_shape)] \
                or (prefix is None) != (p_all is None) \
                or not _close(z, z_all[:k], net.dtype) \
                or not _close(logits, logits_all[:k], net.dtype) \
                or (p_all is not None and not _close(torch.cat(sink), p_all[:k], net.dtype)):
            return None
        where = net.device if self.store_dir is None else torch.device("cpu")
        store = FeatureStore(z_all.to(where), net.dtype, net.head, None if prefix is None
                             else (prefix, p_all.to(net.device),
                                   split_model(net.head, prefix).head),
                             device=net.device)
        return store, logits_all.to(net.device)

    def _keep(self, net: SplitNetwork, store: FeatureStore, logits: torch.Tensor,
              restored: bool = False) -> Any:
        """Keep a fit (computed, or ``restored`` from a state): the network, the store,
        the logits and what follows from them (decisions, the shared bank); ``self``."""
        assert net.input_shape is not None           # set by the first pass
        check_class_names(self.class_names, logits.shape[1])
        self._network = net
        self._store = store
        self.input_size_ = tuple(net.input_shape[-2:])
        self.logits_ = logits
        self.predictions_, self.margins_ = decisions(logits)
        self.restored_ = restored
        self.bank_, self.bank_values_ = None, None
        if self.sampling == "shared":
            idx = torch.randperm(len(store), generator=self._rng(1))
            idx = idx[: int(self.num_boundaries)].to(net.device)
            bank = boundaries_at(store.rest, store.working_rows(idx), self._working_shape())
            self.bank_ = Boundaries(bank.weights, bank.biases, store.rows(idx), bank.pairs)
            self.bank_values_ = store.side_values(bank.weights, bank.biases)
        return self
