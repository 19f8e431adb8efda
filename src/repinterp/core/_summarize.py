"""The summary of :class:`~repinterp.core.interpreter.RepresentativeInterpreter`, as a
mixin: each predicted class peeled into regions (:func:`repinterp.core.summary.peel`),
optionally logic by logic (:mod:`repinterp.core.logics`)."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from . import boundaries, defaults
from .boundaries import Boundaries, boundaries_at
from .contract import LEVELS, PLAIN, Level, check_contract, contract_meta, holdout_mask, tightened
from .errors import UserError
from .index import Bank
from .logics import centroid_boundaries, choose_logics, logic_descriptors
from .precision import exact
from .progress import progress_bar
from .region import Region
from .store import chunk_rows
from .summary import ClassSummary, Summary, peel

if TYPE_CHECKING:
    from .network import SplitNetwork
    from .store import FeatureStore

__all__ = ["SummaryMixin"]


class SummaryMixin:
    """The summary of a fitted interpreter (mixed into
    :class:`~repinterp.core.interpreter.RepresentativeInterpreter`)."""

    if TYPE_CHECKING:                   # set by RepresentativeInterpreter
        num_boundaries: int
        sampling: str
        delta: int | None
        seed: int
        heatmap_method: str
        heatmap_grid: str
        progress: bool
        class_names: Sequence[str] | None
        logits_: torch.Tensor
        bank_: Boundaries | None

        @property
        def min_purity_(self) -> float | None: ...
        @property
        def feature_shape_(self) -> tuple[int, ...]: ...
        _network: SplitNetwork
        _store: FeatureStore
        predictions_: torch.Tensor
        margins_: torch.Tensor

        def _fitted(self, stacklevel: int = 3) -> SummaryMixin: ...
        def _shape(self) -> tuple[int, ...]: ...
        def _working_shape(self) -> tuple[int, ...]: ...
        def explain(self, seed: Any, *, delta: int | None = None,
                    num_boundaries: int | None = None, target: int | None = None
                    ) -> Region: ...
        def _sample_many(self, seeds: list[tuple[torch.Tensor, int, torch.Tensor,
                                                 int | None, int]]) -> list[Boundaries]: ...
        def sample_boundaries(self, seed: Any, num_boundaries: int | None = None
                              ) -> Boundaries: ...
        def _prepare(self, seed: Any, num_boundaries: int | None, target: int | None = None
                     ) -> tuple[int | None, torch.Tensor, int, torch.Tensor, int]: ...
        def _candidates(self, index: int | None, z0: torch.Tensor, cls: int,
                        same: torch.Tensor, q: int, sampled: Boundaries | None = None
                        ) -> tuple[Boundaries, torch.Tensor, torch.Tensor]: ...
        def _region(self, b: Boundaries, values: torch.Tensor, seed_values: torch.Tensor,
                    cls: int, same: torch.Tensor, index: int | None, delta: int | None,
                    logic: int | None = None, *, held: torch.Tensor | None = None,
                    min_purity: float | str | None = "auto", close: int = 0
                    ) -> Region: ...

    # --- a bank of boundaries for a region index -----------------------------------
    @exact
    def sample_bank(self, size: int, per_origin: int = 50, seed: int = 0) -> Bank:
        """``size`` boundaries sampled over the references (a region index's pilot
        sample): origins taken round robin over the predicted classes (each class's
        references in random order, drawn from ``seed``), each bisected towards
        ``per_origin`` random references of other classes (:meth:`sample_boundaries`);
        kept in the working space and in feature space."""
        self._fitted(stacklevel=4)
        if size < 1:
            raise UserError("the bank needs at least one boundary")
        preds = self.predictions_
        classes = sorted(set(preds.tolist()))
        if len(classes) < 2:
            raise UserError("the pilot images are all predicted as one class; a bank "
                            "needs at least two")
        gen = torch.Generator().manual_seed(int(seed))
        queues = {c: (preds == c).nonzero()[:, 0][torch.randperm(
            int((preds == c).sum()), generator=gen)].tolist() for c in classes}
        parts: list[Boundaries] = []
        total = 0
        while total < size and any(queues.values()):
            for c in classes:
                if total >= size or not queues[c]:
                    continue
                b = self.sample_boundaries(queues[c].pop(0), min(per_origin, size - total))
                parts.append(b)
                total += len(b)
        working = Boundaries(*(torch.cat([getattr(p, f) for p in parts])
                               for f in ("weights", "biases", "points", "pairs")))
        weights, biases = self._store.lift(working.weights, working.biases)
        return Bank(working, weights, biases, prefix=self._store.linear is not None,
                    approximate=bool(self._network.approximate))

    def _level_q(self, level: Level) -> int | None:
        """``|Q|`` at a tightening ``level`` (with shared sampling: at most the bank)."""
        return level.candidates(self.num_boundaries,
                                None if self.bank_ is None else len(self.bank_))

    def _explain_references(self, seeds: list[int], *, held: torch.Tensor | None = None,
                            level: Level = PLAIN) -> list[Region]:
        """:meth:`explain` of several reference indices, their boundary searches batched
        (:meth:`_sample_many`): the summary's seeds of every class at once. With a
        purity contract's ``held`` mask, the regions are grown without the held-out
        references (never a boundary's target, not counted by the greedy) at the
        tightening ``level`` (:mod:`repinterp.core.contract`)."""
        prepared = [self._prepare(int(i), self._level_q(level)) for i in seeds]
        away = (lambda same: same) if held is None else \
            (lambda same: same | held.to(same.device))
        if self.bank_ is None:
            store = self._store
            row_bytes = store.z.shape[1] * torch.finfo(store.compute_dtype).bits // 8
            per = max(1, boundaries.SEARCH_BYTES // (prepared[0][4] * row_bytes))
            sampled: list[Boundaries | None] = [
                b for k in range(0, len(prepared), per) for b in self._sample_many(
                    [(z0, cls, away(same), index, q)
                     for index, z0, cls, same, q in prepared[k:k + per]])]
        else:
            sampled = [None] * len(prepared)
        return [self._region(*self._candidates(*seed, sampled=b), seed[2], seed[3], seed[0],
                             self.delta, held=held, min_purity=level.min_purity,
                             close=level.close)
                for seed, b in zip(prepared, sampled, strict=True)]

    # --- summary -----------------------------------------------------------------
    @exact
    def summarize(self, coverage: float = defaults.COVERAGE,
                  max_regions: int = defaults.MAX_REGIONS,
                  classes: list[int] | None = None, *, separate_logics: bool = False,
                  max_logics: int = defaults.MAX_LOGICS,
                  batch_seeds: bool | None = None,
                  target_purity: float | None = defaults.TARGET_PURITY,
                  holdout: float = defaults.HOLDOUT,
                  ladder: Sequence[Level] = LEVELS) -> Summary:
        """Peel each predicted class into regions.

        For each predicted class ``c``: take as seed the remaining reference of class
        ``c`` with the largest top-2 margin, explain it, mark every class-``c`` reference
        inside its region as covered, and repeat until the covered share reaches
        ``coverage`` or ``max_regions`` regions were found. Regions come largest first.

        ``separate_logics``: first split each class by the local linear model its images
        sit in (:meth:`logic_labels`, at most ``max_logics`` logics), then peel each logic
        on its own (``max_regions`` per logic; measured on the shortcut benchmark, capping
        a class at ``ceil(max_regions / k)`` per logic lost the marked region of one
        setting, ``docs/shortcut.md``): its regions keep the logic and exclude
        other classes *and the class's other logics*, with one logic boundary per other
        logic among the candidates (:mod:`repinterp.core.logics`). Regions come logic by
        logic (largest logic first), each region's ``logic`` says which.

        ``batch_seeds``: the classes are peeled side by side and each round's seeds of
        every class are searched in one set of head passes (a GPU's latency: 23 -> 5-8
        head passes per region on the demo models, ``docs/performance.md``). In float32
        a larger batch can round a head's logits differently in the last bits, and so,
        rarely, end in another region than :meth:`explain` of the same seed (measured:
        4 of 17 demo VGG regions, all in one class); so the default (``None``) batches
        only on CUDA, and ``False`` always gives :meth:`explain`'s regions.

        ``target_purity`` (default 0.99): the purity contract
        (:mod:`repinterp.core.contract`). Each reference is held out with probability
        ``holdout`` (a fifth), by a hash of its index and the seed; every region is
        grown on the rest, then tightened until the held-out references inside it are at
        least ``target_purity`` of its class, or given up (``ladder``: the tightening
        levels, loosest first). ``Region.holdout`` gives those counts,
        :attr:`~repinterp.core.summary.Summary.holdout_purity` the pooled figure. ``None``:
        no contract, the paper's rule on every reference (each region is then
        :meth:`explain` of its seed).
        """
        self._fitted(stacklevel=4)
        check_contract(target_purity, holdout, ladder)
        held = None if target_purity is None else \
            holdout_mask(len(self._store), holdout, self.seed).to(self.predictions_.device)
        if batch_seeds is None:
            batch_seeds = torch.device(self._network.device).type == "cuda"
        meta = {"references": len(self._store), "seed": int(self.seed),
                "num_boundaries": int(self.num_boundaries), "sampling": self.sampling,
                "heatmap_method": self.heatmap_method,
                "heatmap_grid": self.heatmap_grid, "min_purity": self.min_purity_,
                "delta": self.delta, "max_logics": int(max_logics),
                "classes": int(self.logits_.shape[1]),
                "feature_shape": list(self.feature_shape_),
                "approximate": self._network.approximate,
                "separate_logics": bool(separate_logics),
                **contract_meta(target_purity, holdout, ladder)}
        if self.class_names is not None:         # for display: Summary.class_names
            meta["class_names"] = [str(n) for n in self.class_names]
        if not separate_logics:
            if held is None:
                out = peel(self.predictions_, self.margins_, self.explain, coverage,
                           max_regions, classes, self.progress,
                           explain_many=self._explain_references if batch_seeds else None)
            else:
                def grow(seeds: list[int], level: Level) -> list[Region]:
                    if batch_seeds:
                        return self._explain_references(seeds, held=held, level=level)
                    return [self._explain_references([i], held=held, level=level)[0]
                            for i in seeds]
                assert target_purity is not None
                many = functools.partial(tightened, grow, target=target_purity,
                                         levels=tuple(ladder))
                out = peel(self.predictions_, self.margins_, None,
                           coverage, max_regions, classes, self.progress,
                           explain_many=many, seedable=~held)
        else:
            wanted = sorted(set(self.predictions_.tolist())) if classes is None \
                else list(classes)
            out = [self._peel_logics(int(c), coverage, max_regions, max_logics,
                                     held=held, target=target_purity,
                                     ladder=tuple(ladder))
                   for c in progress_bar(wanted, desc="logics", unit="class",
                                         enabled=self.progress)]
        return Summary(classes=out, coverage_target=coverage, max_regions=max_regions,
                       layer=self._network.layer, meta=meta)

    @exact
    def logic_labels(self, cls: int, max_logics: int = defaults.MAX_LOGICS, *,
                     min_silhouette: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
        """Split the references predicted as ``cls`` by decision logic: their indices
        ``[n]`` and logic labels ``[n]`` (0 = the largest logic).

        Each image's contributions ``w * psi(x)`` to its own margin, ``w`` the margin
        gradient in its linear piece, pooled by :func:`~repinterp.core.logics.
        logic_descriptors` and clustered by :func:`~repinterp.core.logics.choose_logics`
        (seeded by ``seed``)."""
        self._fitted(stacklevel=4)
        idx = (self.predictions_ == int(cls)).nonzero()[:, 0]
        if len(idx) == 0:
            raise UserError(f"no reference is predicted as class {cls}")
        desc = self._logic_descriptors(idx, int(cls))
        labels = choose_logics(desc, max_logics, min_silhouette=min_silhouette,
                               seed=self.seed)
        return idx, labels

    def _logic_descriptors(self, idx: torch.Tensor, cls: int) -> torch.Tensor:
        """:func:`~repinterp.core.logics.logic_descriptors` of the given references, their
        margin gradients taken in batches through the head."""
        store, shape = self._store, self._shape()
        step = chunk_rows(store.z.shape[1] * 4 * 4, most=1024)
        out = []
        for i in range(0, len(idx), step):
            rows = idx[i:i + step].to(self._network.device)
            c1 = torch.full((len(rows),), cls, dtype=torch.long, device=rows.device)
            found = boundaries_at(store.rest, store.working_rows(rows),
                                  self._working_shape(), c1)
            w, _ = store.lift(found.weights, found.biases)
            r = (w * store.rows(rows)).reshape(-1, *shape)
            out.append(logic_descriptors(r).cpu())
        return torch.cat(out)

    def _peel_logics(self, cls: int, coverage: float, max_regions: int, max_logics: int,
                     *, held: torch.Tensor | None = None, target: float | None = None,
                     ladder: tuple[Level, ...] = LEVELS) -> ClassSummary:
        """The regions of class ``cls``, logic by logic (see :meth:`summarize`; ``held``
        and ``target``: its purity contract)."""
        idx, labels = self.logic_labels(cls, max_logics)
        store = self._store
        logic = torch.full((len(store),), -1, dtype=torch.long)
        logic[idx] = labels
        k = int(labels.max()) + 1
        means = torch.stack([store.mean_rows(idx[labels == j].to(store.device))
                             for j in range(k)])
        regions: list[Region] = []
        for j in range(k):
            others = [o for o in range(k) if o != j]
            w, b = centroid_boundaries(means, j)
            extra = Boundaries(w, b, (means[j][None] + means[others]) / 2,
                               torch.full((k - 1, 2), cls, dtype=torch.long))
            explain = functools.partial(self._explain_logic, group=logic == j, logic=j,
                                        extra=extra,
                                        extra_values=store.feature_side_values(w, b))
            if held is None or target is None:
                regions += peel(torch.where(logic == j, 0, -1), self.margins_, explain,
                                coverage, max_regions, [0])[0].regions
                continue

            def grow(seeds: list[int], level: Level,
                     explain: Callable[..., Region] = explain) -> list[Region]:
                return [explain(i, held=held, level=level) for i in seeds]
            many = functools.partial(tightened, grow, target=target, levels=ladder)
            regions += peel(torch.where(logic == j, 0, -1), self.margins_,
                            None, coverage, max_regions, [0],
                            explain_many=many, seedable=~held)[0].regions
        of_class = self.predictions_ == cls
        covered = torch.zeros_like(of_class)
        for r in regions:
            covered[r.members] = True
        return ClassSummary(cls=cls, n_images=int(of_class.sum()), regions=regions,
                            covered=int((covered & of_class).sum()))

    def _explain_logic(self, index: int, *, group: torch.Tensor, logic: int,
                       extra: Boundaries, extra_values: torch.Tensor,
                       held: torch.Tensor | None = None, level: Level = PLAIN
                       ) -> Region:
        """The region of reference ``index`` that keeps its logic's ``group``: the seed's
        candidates plus the logic boundaries ``extra`` (side values ``extra_values``),
        every reference outside the group counted as other (``held``, ``level``: a
        purity contract's, as in :meth:`_explain_references`)."""
        _, z0, cls, same, q = self._prepare(index, self._level_q(level))
        b, values, _ = self._candidates(index, z0, cls, same if held is None
                                        else same | held.to(same.device), q)
        values = torch.cat([values, extra_values.to(values)], 1)
        return self._region(b.cat(extra), values, values[index], cls, group, index,
                            self.delta, logic=logic, held=held,
                            min_purity=level.min_purity, close=level.close)
