"""What changed between two summaries of the same reference images (two models, or one
model before and after fine-tuning): which regions were kept, split, merged, moved to
another class, gone or new, and which images changed region or class.

Regions are compared by their members only, so the two summaries may come from models
of different architectures or layers, as long as they index the same references in the
same order. :func:`compare_summaries` returns a :class:`Comparison`, a plain value.

The rules, for regions ``A_i`` of the first summary and ``B_j`` of the second (positions
in :attr:`Summary.regions`), with ``I_ij = |A_i & B_j|`` the common members:

* ``J_ij = I_ij / |A_i | B_j|`` (the Jaccard index; 0 when both are empty),
  ``share_a_ij = I_ij / |A_i|`` (the share of ``A_i`` inside ``B_j``) and
  ``share_b_ij = I_ij / |B_j|`` (the share of ``B_j`` inside ``A_i``).
* The **parent** of ``B_j`` is the ``A_i`` holding the largest share of it (largest
  ``share_b_ij``; ties by the larger ``J_ij``, then the lower ``i``), when that share is
  at least ``min_share``; the **host** of ``A_i`` is the ``B_j`` of largest ``share_a_ij``
  (ties by ``J_ij``, then the lower ``j``) when at least ``min_share``.
* **split** (first, ``i`` ascending): ``A_i`` is split when two or more regions ``B_j``
  not yet used have it as parent and each holds at least ``min_part`` of it
  (``share_a_ij >= min_part``), and together they hold at least ``min_share`` of its
  members (their union, not the sum) and at least ``min_part`` of them more than the
  largest part alone (two copies of one region are no split). ``A_i`` and those parts
  are used.
* **merged** (next, ``j`` ascending): ``B_j`` not yet used is a merge when two or more
  regions ``A_i`` not yet used have it as host and each is at least ``min_part`` of it
  (``share_b_ij >= min_part``), and together they make at least ``min_share`` of it and
  ``min_part`` more than the largest alone.
* **kept** / **moved** (next): a one-to-one matching of the regions left, taking the pairs
  of ``J_ij >= min_jaccard`` greedily by decreasing ``J_ij`` (ties by the lower ``i``,
  then the lower ``j``), each region in one pair at most; a pair of the same predicted
  class is kept, else moved (the same images, explained as another class).
* **gone**: a region of the first summary left over; **new**: of the second. A new
  region whose images the first summary held together anyway says so in
  :attr:`Change.overlap` (the region holding most of it, and the share).

Every region is thus in exactly one :class:`Change`. The changes are ordered by how
much changed: :attr:`Change.changed` images (every image of a new, gone, moved, split or
merged change; the images that entered or left a kept region), most first, ties in the
order of :data:`STATUSES`, then by the first region of each side.

Images (with the predictions of both models): each reference's region in a summary is
the first region of its predicted class that holds it as a member, in the summary's
order (class by class, largest first): the region :meth:`Summary.locate_features`
finds. It changed region when the change holding its first region is not the one
holding its second (an image in no region on both sides did not); it changed class
when the two models predict different classes for it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .errors import UserError
from .summary import Summary

__all__ = ["MIN_JACCARD", "MIN_PART", "MIN_SHARE", "STATUSES", "Change", "Comparison",
           "check_thresholds", "compare_summaries"]

#: Jaccard index of a kept or moved pair, at least
MIN_JACCARD = 0.5
#: share of a region that "mostly" means: a parent or host, a split's or merge's cover
MIN_SHARE = 0.6
#: share of the split (merged) region that each part must hold at least
MIN_PART = 0.2
#: the statuses, in the order of a report (what changed most first)
STATUSES = ("new", "gone", "moved", "split", "merged", "kept")
_CHUNK = 1 << 16                       # references per block of the membership product


@dataclass
class Change:
    """One entry of a :class:`Comparison`: a status (one of :data:`STATUSES`), the
    regions it concerns on each side (positions in each summary's :attr:`Summary.regions`)
    and their predicted classes; ``jaccard``: of the union of the first side's members
    and the union of the second's (0 with one side empty); ``size_a``, ``size_b``: those
    unions' sizes; ``entered``, ``left``: references in the second union and not the
    first, and the reverse; ``changed``: the images the change concerns (see the module);
    ``overlap``: for a gone (new) region, the region of the other summary holding most
    of its members and that share (``None`` and 0 when none holds any)."""

    status: str
    regions_a: tuple[int, ...]
    regions_b: tuple[int, ...]
    classes_a: tuple[int, ...]
    classes_b: tuple[int, ...]
    jaccard: float
    size_a: int
    size_b: int
    entered: int
    left: int
    changed: int
    overlap: int | None = None
    overlap_share: float = 0.0


@dataclass
class Comparison:
    """What changed between two summaries of ``references`` reference images: the
    :attr:`changes` (every region in one, ordered by how much changed) and, when the
    predictions of both models were given, per reference its region in each summary
    (``region_a``, ``region_b``: positions in :attr:`Summary.regions`, -1 in none) and
    its predicted class (``class_a``, ``class_b``), all ``long [references]``, and the
    change of each of those regions (``change_a``, ``change_b``: positions in
    :attr:`changes`, -1 for no region). ``thresholds``: the rules' settings."""

    changes: list[Change]
    references: int
    thresholds: dict = field(default_factory=dict)
    region_a: torch.Tensor | None = None
    region_b: torch.Tensor | None = None
    class_a: torch.Tensor | None = None
    class_b: torch.Tensor | None = None
    change_a: torch.Tensor | None = None
    change_b: torch.Tensor | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Changes per status, in the order of :data:`STATUSES`."""
        return {s: sum(c.status == s for c in self.changes) for s in STATUSES}

    def of_status(self, status: str) -> list[Change]:
        """The changes of ``status``, in :attr:`changes`' order."""
        if status not in STATUSES:
            raise UserError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        return [c for c in self.changes if c.status == status]

    @property
    def class_changed(self) -> torch.Tensor:
        """Indices of the references the two models predict differently (ascending;
        empty without predictions)."""
        if self.class_a is None or self.class_b is None:
            return torch.zeros(0, dtype=torch.long)
        return (self.class_a != self.class_b).nonzero()[:, 0]

    @property
    def region_changed(self) -> torch.Tensor:
        """Indices of the references whose change differs between the two sides (see the
        module; ascending; empty without predictions)."""
        if self.change_a is None or self.change_b is None:
            return torch.zeros(0, dtype=torch.long)
        return (self.change_a != self.change_b).nonzero()[:, 0]

    def to_dict(self) -> dict:
        """Plain data (lists, numbers, strings) for JSON: the references, thresholds,
        counts, every change, and the references that changed region or class with
        their region and class on each side."""
        out: dict = {"references": self.references, "thresholds": dict(self.thresholds),
                     "counts": self.counts,
                     "changes": [asdict(c) for c in self.changes]}
        for c in out["changes"]:
            for key in ("regions_a", "regions_b", "classes_a", "classes_b"):
                c[key] = list(c[key])
        if self.region_a is not None:
            assert self.region_b is not None and self.class_a is not None \
                and self.class_b is not None
            idx = torch.unique(torch.cat([self.class_changed, self.region_changed]))
            out["images_changed"] = [
                {"index": i, "region_a": int(self.region_a[i]),
                 "region_b": int(self.region_b[i]), "class_a": int(self.class_a[i]),
                 "class_b": int(self.class_b[i])} for i in idx.tolist()]
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        images = "" if self.class_a is None else (
            f"; {len(self.region_changed)} images changed region, "
            f"{len(self.class_changed)} class")
        return f"Comparison({self.references} references: {counts or 'no region'}{images})"


def _references(a: Summary, b: Summary, predictions: tuple[torch.Tensor | None, ...]
                ) -> int:
    """The number of references both summaries index, refused when they differ."""
    counts = []
    for s, p, which in ((a, predictions[0], "first"), (b, predictions[1], "second")):
        n = s.meta.get("references")
        n = int(n) if isinstance(n, int) else len(p) if p is not None else sum(
            c.n_images for c in s.classes)
        if p is not None and len(p) != n:
            raise UserError(f"the {which} summary has {n} references and "
                            f"{len(p)} predictions")
        counts.append(n)
    if counts[0] != counts[1]:
        raise UserError(f"the summaries are of {counts[0]} and {counts[1]} reference "
                        "images: compare summaries of the same references, in the same "
                        "order")
    digests = [s.meta.get("references_sha256") for s in (a, b)]
    if None not in digests and digests[0] != digests[1]:
        raise UserError("the summaries are of different reference images (their "
                        "references_sha256 differ): compare summaries of the same "
                        "references, decoded the same way")
    return counts[0]


def _membership(summary: Summary, n: int, which: str) -> torch.Tensor:
    """Bool ``[regions, n]``: which references each region holds."""
    m = torch.zeros(len(summary.regions), n, dtype=torch.bool)
    for k, r in enumerate(summary.regions):
        idx = r.members.cpu().long()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise UserError(f"region {k} of the {which} summary has members outside its "
                            f"{n} references")
        m[k, idx] = True
    return m


def _intersections(ma: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
    """``I[i, j] = |A_i & B_j|``: the product of the membership indicators (float64,
    exact below 2**53), by blocks of references."""
    out = torch.zeros(len(ma), len(mb), dtype=torch.float64)
    for s in range(0, ma.shape[1], _CHUNK):
        out += ma[:, s:s + _CHUNK].double() @ mb[:, s:s + _CHUNK].double().T
    return out


def _best(primary: torch.Tensor, secondary: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column: the row of the largest ``primary`` (ties by the larger ``secondary``,
    then the lower row) and that value (-1 and 0 for no row)."""
    if primary.shape[0] == 0:
        return (torch.full((primary.shape[1],), -1, dtype=torch.long),
                torch.zeros(primary.shape[1], dtype=primary.dtype))
    top = primary.max(0).values
    cand = primary == top
    second = torch.where(cand, secondary, torch.full_like(secondary, -1.0))
    cand &= second == second.max(0).values
    return cand.to(torch.uint8).argmax(0), top     # argmax: the first of the maxima


def _locate(m: torch.Tensor, classes: torch.Tensor, predictions: torch.Tensor
            ) -> torch.Tensor:
    """Per reference, the first region of its predicted class holding it (-1: none)."""
    ok = m & (classes[:, None] == predictions[None, :])
    if len(ok) == 0:
        return torch.full((m.shape[1],), -1, dtype=torch.long)
    first = ok.to(torch.uint8).argmax(0)
    return torch.where(ok.any(0), first, torch.full_like(first, -1))


def check_thresholds(min_jaccard: float, min_share: float, min_part: float) -> None:
    """Refuse thresholds outside ``(0, 1]`` (a :class:`UserError` naming all three)."""
    if not all(0 < v <= 1 for v in (min_jaccard, min_share, min_part)):
        raise UserError(f"{{min_jaccard}}, {{min_share}} and {{min_part}} must each be in "
                        f"(0, 1], got {min_jaccard}, {min_share} and {min_part}",
                        params={"min_jaccard": "min_jaccard", "min_share": "min_share",
                                "min_part": "min_part"})


def compare_summaries(a: Summary, b: Summary, *,
                      predictions_a: torch.Tensor | None = None,
                      predictions_b: torch.Tensor | None = None,
                      min_jaccard: float = MIN_JACCARD, min_share: float = MIN_SHARE,
                      min_part: float = MIN_PART) -> Comparison:
    """What changed from summary ``a`` to summary ``b`` of the same references (the same
    images in the same order; summaries of different numbers of references, or whose
    recorded ``references_sha256`` differ, are a :class:`UserError`), by the rules of
    this module's docstring with ``min_jaccard``, ``min_share`` and ``min_part``, each in
    ``(0, 1]``. ``predictions_a``, ``predictions_b``: the classes each model predicts for
    the references (e.g. :attr:`RepresentativeInterpreter.predictions_`), for the images
    that changed region or class (both or neither). Deterministic: no random draw, every
    tie broken by the rules."""
    check_thresholds(min_jaccard, min_share, min_part)
    if (predictions_a is None) != (predictions_b is None):
        raise UserError("give the predictions of both models, or of neither")
    n = _references(a, b, (predictions_a, predictions_b))
    ra, rb = a.regions, b.regions
    ma, mb = _membership(a, n, "first"), _membership(b, n, "second")
    inter = _intersections(ma, mb)
    size_a, size_b = ma.sum(1).double(), mb.sum(1).double()
    union = size_a[:, None] + size_b[None, :] - inter
    jac = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
    share_a = inter / size_a.clamp_min(1)[:, None]      # of A_i inside B_j
    share_b = inter / size_b.clamp_min(1)[None, :]      # of B_j inside A_i
    parent, parent_share = _best(share_b, jac)
    host, host_share = _best(share_a.T, jac.T)
    used_a, used_b = [False] * len(ra), [False] * len(rb)
    groups: list[tuple[str, list[int], list[int]]] = []

    def pieces(whole: torch.Tensor, parts: torch.Tensor) -> bool:
        """Do ``parts`` hold at least ``min_share`` of ``whole`` together, and at least
        ``min_part`` of it more than the largest part alone?"""
        size = max(int(whole.sum()), 1)
        union = float((whole & parts.any(0)).sum()) / size
        largest = float((whole & parts).sum(1).max()) / size
        return union >= min_share and union - largest >= min_part

    for i in range(len(ra)):
        parts = [j for j in range(len(rb)) if not used_b[j] and int(parent[j]) == i
                 and float(parent_share[j]) >= min_share and float(share_a[i, j]) >= min_part]
        if len(parts) >= 2 and pieces(ma[i], mb[parts]):
            used_a[i] = True
            for j in parts:
                used_b[j] = True
            groups.append(("split", [i], parts))
    for j in range(len(rb)):
        parts = [i for i in range(len(ra)) if not used_a[i] and int(host[i]) == j
                 and float(host_share[i]) >= min_share and float(share_b[i, j]) >= min_part]
        if not used_b[j] and len(parts) >= 2 and pieces(mb[j], ma[parts]):
            used_b[j] = True
            for i in parts:
                used_a[i] = True
            groups.append(("merged", parts, [j]))
    ii, jj = (jac >= min_jaccard).nonzero(as_tuple=True)
    for _, i, j in sorted(zip((-jac[ii, jj]).tolist(), ii.tolist(), jj.tolist(), strict=True)):
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            same = ra[i].predicted_class == rb[j].predicted_class
            groups.append(("kept" if same else "moved", [i], [j]))
    groups += [("gone", [i], []) for i in range(len(ra)) if not used_a[i]]
    groups += [("new", [], [j]) for j in range(len(rb)) if not used_b[j]]

    changes = [_change(status, ia, ib, ra, rb, ma, mb, share_a, share_b, jac)
               for status, ia, ib in groups]
    changes.sort(key=lambda c: (-c.changed, STATUSES.index(c.status),
                                c.regions_a[:1] or (len(ra),), c.regions_b[:1] or (len(rb),)))
    out = Comparison(changes, n, {"min_jaccard": min_jaccard, "min_share": min_share,
                                  "min_part": min_part})
    if predictions_a is not None and predictions_b is not None:
        _images(out, ma, mb, [r.predicted_class for r in ra],
                [r.predicted_class for r in rb], predictions_a, predictions_b)
    return out


def _change(status: str, ia: list[int], ib: list[int], ra: list, rb: list,
            ma: torch.Tensor, mb: torch.Tensor, share_a: torch.Tensor,
            share_b: torch.Tensor, jac: torch.Tensor) -> Change:
    """The :class:`Change` of a group of regions (see the module's rules)."""
    ua = ma[ia].any(0) if ia else torch.zeros(ma.shape[1], dtype=torch.bool)
    ub = mb[ib].any(0) if ib else torch.zeros(mb.shape[1], dtype=torch.bool)
    both, either = int((ua & ub).sum()), int((ua | ub).sum())
    entered, left = int((ub & ~ua).sum()), int((ua & ~ub).sum())
    overlap, share = None, 0.0
    if status in ("gone", "new"):
        # the other side's region holding most of this one (ties: Jaccard, then index)
        row = share_a[ia[0]] if status == "gone" else share_b[:, ib[0]]
        sims = jac[ia[0]] if status == "gone" else jac[:, ib[0]]
        best, top = _best(row[:, None], sims[:, None])
        if len(row) and float(top[0]) > 0:
            overlap, share = int(best[0]), float(top[0])
    return Change(status, tuple(ia), tuple(ib), tuple(ra[i].predicted_class for i in ia),
                  tuple(rb[j].predicted_class for j in ib),
                  both / either if either else 0.0, int(ua.sum()), int(ub.sum()),
                  entered, left, entered + left if status == "kept" else either,
                  overlap, share)


def _images(out: Comparison, ma: torch.Tensor, mb: torch.Tensor, classes_a: list[int],
            classes_b: list[int], predictions_a: torch.Tensor,
            predictions_b: torch.Tensor) -> None:
    """Fill ``out``'s per-reference fields (see :class:`Comparison`)."""
    pa, pb = predictions_a.cpu().long(), predictions_b.cpu().long()
    out.class_a, out.class_b = pa, pb
    out.region_a = _locate(ma, torch.tensor(classes_a, dtype=torch.long), pa)
    out.region_b = _locate(mb, torch.tensor(classes_b, dtype=torch.long), pb)
    of_a = torch.full((len(ma) + 1,), -1, dtype=torch.long)   # the last: no region
    of_b = torch.full((len(mb) + 1,), -1, dtype=torch.long)
    for k, c in enumerate(out.changes):
        of_a[list(c.regions_a)] = k
        of_b[list(c.regions_b)] = k
    out.change_a, out.change_b = of_a[out.region_a], of_b[out.region_b]
