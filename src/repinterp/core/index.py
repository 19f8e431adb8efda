"""A region index: every image's side of a bank of boundaries, without its features.

The greedy, the ranking, the summary and locating a new image need, for each image, only
its prediction and, for each candidate boundary, its side and its value
``w . psi(x) + b``. A *bank* of boundaries is sampled once on a pilot sample
(:meth:`RepresentativeInterpreter.sample_bank`: bisection from pilot images of every
predicted class towards pilot images of other classes, as the per-seed sampling of METHOD
§1 does); then one streaming pass (:func:`index_rows`, batch by batch) keeps per image its
prediction, top-2 margin, the signs of its side values bit-packed and the values in
float16. Memory is ``O(N x |bank|)``, never ``O(N x D)``.

Departure from the paper: a seed's boundaries come from the bank, not from bisection
towards references of other classes from the seed itself.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from . import defaults
from .boundaries import Boundaries, flip
from .contract import LEVELS, Level, check_contract, contract_meta, holdout_mask, tightened
from .engine import Candidates, make_region, purity_stop
from .errors import UserError
from .greedy import pack_columns
from .network import SplitNetwork
from .passes import auto_batch_size, batches, decisions
from .precision import exact
from .region import Region
from .split import linear_prefix
from .summary import Summary, peel

__all__ = ["Bank", "IndexRows", "IndexWorker", "RegionIndex", "pack_signs",
           "signs_at", "unpack_signs"]

F16_MAX = float(torch.finfo(torch.float16).max)

_BIT = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_signs(values: torch.Tensor) -> torch.Tensor:
    """``values >= 0`` of ``[n, B]`` values as ``[n, ceil(B / 8)]`` uint8, most significant
    bit first (``numpy.packbits`` order)."""
    bits = (values >= 0).to(torch.uint8).cpu()
    pad = (-bits.shape[1]) % 8
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    return (bits.view(len(bits), -1, 8) * _BIT).sum(2, dtype=torch.uint8)


def unpack_signs(packed: torch.Tensor, size: int) -> torch.Tensor:
    """Bool ``[n, size]`` from :func:`pack_signs`."""
    bits = (packed[:, :, None] & _BIT) != 0
    return bits.reshape(len(packed), -1)[:, :size]


def signs_at(packed: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Bool ``[n, len(columns)]``: the given columns of :func:`pack_signs` output, read
    without unpacking the others."""
    return (packed[:, columns // 8] & _BIT[columns % 8]) != 0


@dataclass
class Bank:
    """Candidate boundaries shared by every image of an index.

    ``working``: the boundaries where side values are computed (the store's working
    space, :mod:`repinterp.core.store`: the output of the head's first linear layer when
    ``prefix``, else feature space); ``weights``, ``biases``: the same in flattened
    feature space (for heat maps and regions); ``approximate``: the head they were
    sampled on is not piecewise linear, so they are tangent planes
    (:attr:`RepresentativeInterpreter.approximate_`): the index's regions say so and its
    greedy's ``"auto"`` purity stop is the tangent one
    (:func:`~repinterp.core.engine.purity_stop`). A bank saved without the flag loads
    as exact.
    """

    working: Boundaries
    weights: torch.Tensor
    biases: torch.Tensor
    prefix: bool = False
    approximate: bool = False

    def __len__(self) -> int:
        return len(self.working)

    def to_dict(self) -> dict:
        """Plain tensors (``torch.save``, loaded with ``weights_only=True``); the
        feature-space boundaries only when they differ from the working ones."""
        w = self.working
        same = self.weights.data_ptr() == w.weights.data_ptr()
        return {"working_weights": w.weights.cpu(), "working_biases": w.biases.cpu(),
                "points": w.points.cpu(), "pairs": w.pairs.cpu(),
                "weights": None if same else self.weights.cpu(),
                "biases": None if same else self.biases.cpu(), "prefix": self.prefix,
                "approximate": self.approximate}

    @classmethod
    def from_dict(cls, d: dict) -> Bank:
        working = Boundaries(d["working_weights"], d["working_biases"], d["points"],
                             d["pairs"])
        tangent = bool(d.get("approximate", False))
        if d["weights"] is None:
            return cls(working, working.weights, working.biases, bool(d["prefix"]), tangent)
        return cls(working, d["weights"], d["biases"], bool(d["prefix"]), tangent)


@dataclass
class IndexRows:
    """Per image: ``predictions [n]``, top-2 ``margins [n]``, ``signs [n, ceil(B/8)]``
    (bit-packed ``value >= 0``) and ``values [n, B]`` in float16."""

    predictions: torch.Tensor
    margins: torch.Tensor
    signs: torch.Tensor
    values: torch.Tensor

    def __len__(self) -> int:
        return len(self.predictions)

    def slice(self, start: int, end: int) -> IndexRows:
        """Rows ``start .. end - 1``."""
        return IndexRows(*(getattr(self, f)[start:end] for f in
                           ("predictions", "margins", "signs", "values")))

    def clone(self) -> IndexRows:
        """These rows in storage of their own (a slice shares its parent's)."""
        return IndexRows(*(getattr(self, f).clone() for f in
                           ("predictions", "margins", "signs", "values")))

    @classmethod
    def cat(cls, parts: Iterable[IndexRows], n: int | None = None) -> IndexRows:
        """The rows of ``parts`` one after the other. With ``n`` (their total), ``parts``
        may be a generator: each part is copied into place and dropped, so that reading
        an index never holds its rows twice."""
        fields = ("predictions", "margins", "signs", "values")
        if n is None:
            parts = list(parts)
            return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))
        out: IndexRows | None = None
        at = 0
        for part in parts:
            if out is None:
                out = cls(*(getattr(part, f).new_empty((n, *getattr(part, f).shape[1:]))
                            for f in fields))
            for f in fields:
                getattr(out, f)[at:at + len(part)] = getattr(part, f)
            at += len(part)
        if out is None or at != n:
            raise ValueError(f"the parts hold {at} rows, not {n}")
        return out


class IndexWorker:
    """What one worker holds to index images: the split network (private copies) and
    the bank in its working space. :meth:`rows` is the only computation of an index
    pass, so every engine gives the same rows for the same images.

    Parameters
    ----------
    model, layer
        As for :class:`RepresentativeInterpreter` (the bank must come from the same).
    bank
        The candidate boundaries.
    batch_size, device
        As for :class:`~repinterp.core.network.SplitNetwork`.
    """

    def __init__(self, model: torch.nn.Module, layer: str | torch.nn.Module, bank: Bank,
                 *, batch_size: int | None = None, device: str | None = None):
        self.network = SplitNetwork(model, layer, batch_size=batch_size, device=device,
                                    progress=False)
        self.linear = linear_prefix(self.network.head) if bank.prefix else None
        if bank.prefix and self.linear is None:
            raise UserError("the bank lives after the head's first linear layer, which "
                            "this network does not start its head with")
        d = self.network.device
        self.normals = bank.working.weights.T.to(d, self.network.dtype).contiguous()
        self.offsets = bank.working.biases.to(d, self.network.dtype)

    @exact
    @torch.no_grad()
    def rows(self, images: torch.Tensor) -> IndexRows:
        """Index rows of ``images`` ``[n, C, H, W]``, batch by batch: features, logits,
        working space, side values against the bank; each batch's features are dropped
        before the next (memory: one batch, not ``n x D``). Values beyond float16's range
        are clamped to it (their signs are kept exactly)."""
        net = self.network
        size = net.batch_size or auto_batch_size(images, net.device)
        parts = []
        for batch in batches(images, size):
            z = net.features(batch, progress=False)
            sink: list[torch.Tensor] = []            # the head's first linear layer's
            logits = net.logits(z, capture=self.linear, sink=sink)  # outputs, if a prefix
            p = z if self.linear is None else torch.cat(sink)
            values = torch.addmm(self.offsets, p, self.normals)
            half = values.clamp(-F16_MAX, F16_MAX).to(torch.float16).cpu()
            predictions, margins = decisions(logits)
            parts.append(IndexRows(predictions, margins.float(), pack_signs(values), half))
        if not parts:
            raise UserError("no images given")
        return IndexRows.cat(parts)


def column_bits(signs: torch.Tensor, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed signs ``[n, ceil(width / 8)]`` (:func:`pack_signs`) as one bitset over the
    ``n`` images per bank boundary, ``[width, ceil(n / 64)]`` uint64 (the greedy's
    layout), built in chunks of rows; and the bitset of all ``n`` images."""
    n = len(signs)
    step = 1 << 16                                          # rows per chunk, 64-aligned
    cols = np.zeros((width, (n + 63) // 64), dtype=np.uint64)
    at = 0
    for i in range(0, n, step):
        part = pack_columns(unpack_signs(signs[i:i + step], width).numpy())
        cols[:, at:at + part.shape[1]] = part
        at += part.shape[1]
    return cols, pack_columns(np.ones((n, 1), dtype=bool))[0]


def oriented_bits(cols: np.ndarray, valid: np.ndarray, cand: torch.Tensor,
                  seed_side: torch.Tensor) -> np.ndarray:
    """The bank columns ``cand`` of :func:`column_bits` output ``cols`` (``valid``: the
    bitset of all images) as a seed's excluded images: per candidate, the images on the
    other side than the seed's (``seed_side``: the seed is on the positive side)."""
    excluded = cols[cand.numpy()]                     # the images on the positive side
    excluded[seed_side.numpy()] ^= valid[None]
    return excluded


def oriented_values(values: torch.Tensor, cand: torch.Tensor, signs: torch.Tensor
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``at(rows, columns)``: the float16 index ``values`` of the given rows at the
    candidates ``cand[columns]``, in float32, times their orientation ``signs``."""
    def at(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return values[rows[:, None], cand[columns][None]].float() * signs[columns]
    return at


def oriented_boundaries(bank: Bank, cand: torch.Tensor, signs: torch.Tensor
                        ) -> Callable[[torch.Tensor], Boundaries]:
    """``at(columns)``: the bank's boundaries ``cand[columns]`` in feature space,
    oriented by ``signs`` (points and pairs from the working boundaries, flipped)."""
    def at(columns: torch.Tensor) -> Boundaries:
        pick, s = cand[columns], signs[columns]
        working = flip(bank.working.select(pick), s)
        return Boundaries(bank.weights[pick] * s[:, None], bank.biases[pick] * s,
                          working.points, working.pairs)
    return at


def seed_row(seed: int | IndexRows, n: int, row_at: Callable[[int], IndexRows]
             ) -> tuple[int | None, IndexRows]:
    """A seed given to ``explain``: an indexed image's number (its row from
    ``row_at``) or an outside image's rows, as ``(index or None, row)``."""
    if isinstance(seed, IndexRows):
        if len(seed) != 1:
            raise UserError("explain takes the rows of one outside image")
        return None, seed
    index = int(seed)
    if not 0 <= index < n:
        raise UserError(f"seed index {index} out of range 0..{n - 1}")
    return index, row_at(index)


@dataclass
class RegionIndex:
    """A bank and the index rows of ``N`` images: greedy, ranking, summaries and locating
    new images work from it alone (no features, no network).

    Regions built here carry the bank's feature-space boundaries, so heat maps and
    membership of new images work as for any :class:`Region`.
    """

    bank: Bank
    rows: IndexRows
    feature_shape: tuple[int, ...]
    layer: str = ""
    meta: dict = field(default_factory=dict)
    _norms: torch.Tensor | None = field(default=None, repr=False, compare=False)
    _cols: np.ndarray | None = field(default=None, repr=False, compare=False)
    _valid: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.rows)

    def class_counts(self) -> np.ndarray:
        """Indexed images per predicted class."""
        return np.bincount(self.rows.predictions.numpy())

    @property
    def nbytes(self) -> int:
        """Bytes of the per-image rows (what grows with ``N``)."""
        r = self.rows
        return sum(t.numel() * t.element_size()
                   for t in (r.predictions, r.margins, r.signs, r.values))

    @property
    def approximate(self) -> bool:
        """True when the bank's boundaries are tangent planes of a smooth head."""
        return self.bank.approximate

    @property
    def min_purity_(self) -> float | None:
        """The purity stop of ``min_purity="auto"`` for this index's head
        (:func:`~repinterp.core.engine.purity_stop`)."""
        return purity_stop("auto", self.approximate)

    def explain(self, seed: int | IndexRows, *, delta: int | None = None,
                num_boundaries: int | None = None,
                min_purity: float | str | None = "auto",
                held: torch.Tensor | None = None, close: int = 0) -> Region:
        """The region of an indexed image (its row number) or of an outside image (its
        :class:`IndexRows`, from :meth:`IndexWorker.rows`).

        The candidates are every boundary of the bank (default), or the
        ``num_boundaries`` nearest to the seed (distance ``|g . p + c| / |g|`` in the
        working space) among those that separate its predicted class from another. The
        greedy stops at ``delta`` (default: the smallest feasible) or as soon as the
        images covered are ``min_purity`` of the seed's class (``"auto"``: the bank's
        head decides, 0.995 for exact boundaries, 0.999 for tangent ones; ``None``: the
        paper's rule alone). The whole bank with the purity stop was chosen by
        measurement, see ``docs/index.md``. ``held``, ``close``: a purity contract's
        held-out rows (not counted) and the greedy's closing step
        (:mod:`repinterp.core.contract`).
        """
        index, row = seed_row(seed, len(self), lambda i: self.rows.slice(i, i + 1))
        cls = int(row.predictions[0])
        cand = self._candidates(cls, row.values[0].float(), num_boundaries)
        preds = self.rows.predictions
        same = preds == cls
        if bool(same.all()):
            raise UserError(f"every indexed image is predicted as class {cls}")
        return make_region(self._oriented(row, cand), preds, cls, same, seed_index=index,
                           delta=delta, min_purity=purity_stop(min_purity, self.approximate),
                           feature_shape=self.feature_shape, approximate=self.approximate,
                           ignore=held, close=close, stacklevel=3)

    def _oriented(self, row: IndexRows, cand: torch.Tensor) -> Candidates:
        """The bank columns ``cand`` as a seed's candidates, oriented by its exact signs
        (the values are float16), the excluded images as bitsets per boundary."""
        seed_side = signs_at(row.signs, cand)[0]
        cols = self._columns()
        assert self._valid is not None                    # set with the columns
        signs = torch.where(seed_side, 1.0, -1.0)
        return Candidates(oriented_bits(cols, self._valid, cand, seed_side),
                          row.values[0, cand].float() * signs,
                          oriented_values(self.rows.values, cand, signs),
                          oriented_boundaries(self.bank, cand, signs))

    def _columns(self) -> np.ndarray:
        """The signs as one bitset over the images per bank boundary (built once)."""
        if self._cols is None:
            self._cols, self._valid = column_bits(self.rows.signs, len(self.bank))
        return self._cols

    def _candidates(self, cls: int, values: torch.Tensor, q: int | None) -> torch.Tensor:
        """Bank columns a seed of class ``cls`` with side values ``values`` chooses from."""
        if q is not None and self._norms is None:
            self._norms = self.bank.working.weights.double().norm(dim=1).float().cpu()
        return self.candidates(self.bank, cls, values, q, self._norms)

    @staticmethod
    def candidates(bank: Bank, cls: int, values: torch.Tensor, q: int | None,
                   norms: torch.Tensor | None = None) -> torch.Tensor:
        """The bank columns a seed of class ``cls`` with side values ``values`` chooses
        from: all of them (``q`` None), or the ``q`` nearest (``|value| / |normal|``)
        among those that separate ``cls`` from another class (``norms``: the working
        normals' norms, when already computed)."""
        if q is None:
            return torch.arange(len(bank))
        if q < 1:
            raise UserError("num_boundaries must be at least 1")
        if norms is None:
            norms = bank.working.weights.double().norm(dim=1).float().cpu()
        pairs = bank.working.pairs.cpu()
        of_cls = ((pairs == cls).any(1)).nonzero()[:, 0]
        if len(of_cls) == 0:
            raise UserError(f"the bank holds no boundary of class {cls}; build the index "
                            "with {param}", param="bank", api="a larger pilot or bank")
        dist = values[of_cls].abs() / norms[of_cls].clamp_min(1e-30)
        return of_cls[torch.sort(dist, stable=True).indices[:q]]

    def summarize(self, coverage: float = defaults.COVERAGE,
                  max_regions: int = defaults.MAX_REGIONS,
                  classes: list[int] | None = None, progress: bool = False,
                  num_boundaries: int | None = None,
                  min_purity: float | str | None = "auto",
                  target_purity: float | None = defaults.TARGET_PURITY,
                  holdout: float = defaults.HOLDOUT, seed: int = 0,
                  ladder: Sequence[Level] = LEVELS) -> Summary:
        """Peel each predicted class into regions as
        :meth:`RepresentativeInterpreter.summarize` does (:func:`peel`), with its purity
        contract (``target_purity``, ``holdout``, ``ladder``; ``seed`` draws the
        held-out rows; a level's boundaries multiply ``num_boundaries``, the whole bank
        when it is None)."""
        check_contract(target_purity, holdout, ladder)
        if target_purity is None:
            out = peel(self.rows.predictions, self.rows.margins,
                       lambda i: self.explain(i, num_boundaries=num_boundaries,
                                              min_purity=min_purity),
                       coverage, max_regions, classes, progress)
        else:
            held = holdout_mask(len(self), holdout, seed)

            def grow(seeds: list[int], level: Level) -> list[Region]:
                return [self.explain(i, num_boundaries=level.candidates(num_boundaries),
                                     min_purity=level.stop(min_purity), held=held,
                                     close=level.close) for i in seeds]
            many = functools.partial(tightened, grow, target=target_purity,
                                     levels=tuple(ladder))
            out = peel(self.rows.predictions, self.rows.margins, None,
                       coverage, max_regions, classes, progress, explain_many=many,
                       seedable=~held)
        return Summary(classes=out, coverage_target=coverage, max_regions=max_regions,
                       layer=self.layer, meta={**self.meta, "references": len(self),
                                               "bank": len(self.bank),
                                               "approximate": self.approximate,
                                               "num_boundaries": num_boundaries,
                                               "min_purity": min_purity,
                                               **contract_meta(target_purity, holdout,
                                                               ladder)})
