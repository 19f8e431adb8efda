"""The schema of a saved summary (:meth:`repinterp.core.summary.Summary.to_dict`): its
version, the typed record of its meta (:class:`SummaryMeta`) and the checks that
:meth:`~repinterp.core.summary.Summary.from_dict` runs on every field before any of it
is used."""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch

from .errors import UserError
from .region import Region

if TYPE_CHECKING:
    from .summary import Summary

__all__ = ["READABLE_VERSIONS", "SUMMARY_VERSION", "SummaryMeta", "check_summary_data",
           "needs_boundary_points"]

#: The schema of :meth:`Summary.to_dict` (and of ``summary.pt``). Version 2: a region's
#: ``boundary_points`` only where the summary's heat map needs them (``logprob``), and its
#: ``class_name``; version 1 (every region with its points, no names) is read as well.
SUMMARY_VERSION = 2
#: The versions this build reads; another is refused.
READABLE_VERSIONS = (1, 2)

_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class SummaryMeta:
    """The typed record of a summary's ``meta``: what its regions index into and every
    setting that changed them, as written by the code that made the summary
    (:meth:`RepresentativeInterpreter.summarize`, a region index, the pipeline).

    ``references``: number of reference images (member indices are ``0..references-1``);
    ``classes``: the model's number of classes; ``feature_shape``: one feature map's
    shape at the layer; ``approximate``: tangent boundaries; ``seed``, ``num_boundaries``
    (``|Q|``, None: every candidate of an index's bank), ``sampling``, ``min_purity``
    (the purity stop in use: a share, ``"auto"`` or None), ``delta`` (None: the smallest
    feasible), ``separate_logics``, ``max_logics``: the search's settings;
    ``heatmap_method``, ``heatmap_grid``: how its heat maps are drawn. Optional facts:
    ``model_digest`` and ``references_sha256`` (what it was made from), ``index`` (the
    region index it was made from), ``model`` (how the model was named), ``data``,
    ``class_names``. ``extra``: any other key of the meta, plain data only."""

    references: int
    classes: int
    feature_shape: tuple[int, ...]
    approximate: bool
    seed: int
    num_boundaries: int | None
    sampling: str
    min_purity: float | str | None
    delta: int | None
    separate_logics: bool
    max_logics: int
    heatmap_method: str
    heatmap_grid: str
    model_digest: str | None = None
    references_sha256: str | None = None
    index: str | None = None
    model: str | dict | None = None
    data: str | None = None
    class_names: list[str] | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, meta: Any) -> SummaryMeta:
        """The record of a meta dict, every field's type checked (a missing required
        field, a wrong type, a non-finite number or a non-plain extra value is a
        :class:`UserError` naming it)."""
        if not isinstance(meta, dict):
            raise UserError(f"its meta is a {type(meta).__name__}, not a dict")
        kinds: dict[str, type | tuple[type, ...]] = {
                 "references": int, "classes": int, "approximate": bool, "seed": int,
                 "num_boundaries": (int, type(None)), "sampling": str,
                 "min_purity": (float, int, str, type(None)),
                 "delta": (int, type(None)), "separate_logics": bool, "max_logics": int,
                 "heatmap_method": str, "heatmap_grid": str,
                 "model_digest": (str, type(None)), "references_sha256": (str, type(None)),
                 "index": (str, type(None)), "model": (str, dict, type(None)),
                 "data": (str, type(None)), "class_names": (list, type(None)),
                 "feature_shape": (list, tuple)}
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            if f.name not in meta:
                if f.default is MISSING:
                    raise UserError(f"it records no {f.name!r} (written by an older "
                                    "repinterp?); run `repinterp summarize` again")
                continue
            v = meta[f.name]
            if not isinstance(v, kinds[f.name]) or (
                    isinstance(v, bool) and kinds[f.name] is not bool):
                raise UserError(f"its {f.name!r} has the wrong type ({type(v).__name__})")
            values[f.name] = v
        _plain("meta", meta)
        shape = values["feature_shape"]
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                for s in shape):
            raise UserError(f"its feature_shape {list(shape)!r} is not a list of positive "
                            "sizes")
        values["feature_shape"] = tuple(shape)
        if values["references"] < 0 or values["classes"] < 1 or values["max_logics"] < 1:
            raise UserError("its references, classes or max_logics are out of range")
        if values.get("num_boundaries") is not None and values["num_boundaries"] < 1:
            raise UserError("its num_boundaries is below 1")
        mp = values["min_purity"]
        if (isinstance(mp, str) and mp != "auto") or (
                isinstance(mp, (int, float)) and not 0 < mp <= 1):
            raise UserError(f"its min_purity {mp!r} is not 'auto', None or in (0, 1]")
        names = values.get("class_names")
        if names is not None and (len(names) != values["classes"] or not all(
                isinstance(n, str) for n in names)):
            raise UserError(f"its class_names are not {values['classes']} strings")
        known = {f.name for f in fields(cls)}
        return cls(**values, extra={k: v for k, v in meta.items() if k not in known})

    def to_meta(self) -> dict:
        """The plain meta dict of this record: its extra keys, every required field, and
        the optional ones that are not None."""
        optional = {f.name for f in fields(self) if f.default is not MISSING}
        out = {k: v for k, v in asdict(self).items()
               if k != "extra" and not (k in optional and v is None)}
        out["feature_shape"] = list(self.feature_shape)
        return {**self.extra, **out}


def _plain(where: str, value: Any, depth: int = 0) -> None:
    """Refuse anything but plain data (numbers, strings, None, lists, dicts of those) and
    non-finite numbers, nested at most 8 deep."""
    if depth > 8:
        raise UserError(f"its {where} is nested too deep")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise UserError(f"its {where} has a key that is not a string")
            _plain(f"{where}.{k}", v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _plain(where, v, depth + 1)
    elif not isinstance(value, _PLAIN):
        raise UserError(f"its {where} holds a {type(value).__name__}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"its {where} is {value}")


def _number(where: str, v: Any, kind: type | tuple[type, ...], lo: float, hi: float
            ) -> None:
    x = float(v) if isinstance(v, (int, float)) and isinstance(v, kind) \
        and not isinstance(v, bool) else math.nan
    if not (math.isfinite(x) and lo <= x <= hi):
        raise UserError(f"{where} is {v!r}, not a number in {lo:g}..{hi:g}")


def _tensor(where: str, t: Any, shape: tuple[int | None, ...], floating: bool) -> None:
    """Refuse what is not a tensor of ``shape`` (None: any size) and kind, or not finite."""
    if not isinstance(t, torch.Tensor) or t.ndim != len(shape) or any(
            s is not None and s != n for s, n in zip(shape, t.shape, strict=True)):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise UserError(f"{where} has shape {got}, expected "
                        f"{tuple('*' if s is None else s for s in shape)}")
    if t.is_floating_point() != floating or t.is_complex() or t.dtype == torch.bool:
        raise UserError(f"{where} holds {t.dtype} values")
    if floating and not bool(torch.isfinite(t).all()):
        raise UserError(f"{where} holds a NaN or infinite value")


def _region(where: str, d: Any, rec: SummaryMeta, cls: int) -> Region:
    """A region of saved data, every field of :class:`Region` checked (a field this
    check does not know is plain data or a finite tensor). Boundary points left out
    (a heat map that does not need them) are read as none (``[0, D]``)."""
    if not isinstance(d, dict):
        raise UserError(f"{where} is not a dict")
    names = {f.name for f in fields(Region)}
    unknown = [k for k in d if k not in names]
    if unknown:
        raise UserError(f"{where} has an unknown field {unknown[0]!r}")
    points = "boundary_points" in d
    if not points and not needs_boundary_points(rec.heatmap_method) and isinstance(
            d.get("weights"), torch.Tensor) and d["weights"].ndim == 2:
        d = dict(d, boundary_points=d["weights"].new_zeros(0, d["weights"].shape[1]))
    for f in fields(Region):
        if f.name not in d and f.default is MISSING and f.default_factory is MISSING:
            raise UserError(f"{where} has no {f.name!r}")
    n, dim = rec.references, math.prod(rec.feature_shape)
    shape = d["feature_shape"]
    if not isinstance(shape, (tuple, list)) or tuple(shape) != rec.feature_shape:
        raise UserError(f"{where} has feature shape {shape!r}, the summary records "
                        f"{rec.feature_shape}")
    p = d["weights"].shape[0] if isinstance(d["weights"], torch.Tensor) and \
        d["weights"].ndim else -1
    _tensor(f"{where}: weights", d["weights"], (p, dim), True)
    _tensor(f"{where}: biases", d["biases"], (p,), True)
    _tensor(f"{where}: boundary_points", d["boundary_points"], (p if points else 0, dim),
            True)
    _tensor(f"{where}: seed_values", d["seed_values"], (p,), True)
    _tensor(f"{where}: pairs", d["pairs"], (p, 2), False)
    if p and (int(d["pairs"].min()) < 0 or int(d["pairs"].max()) >= rec.classes):
        raise UserError(f"{where}: a boundary's class is outside 0..{rec.classes - 1}")
    members = d["members"]
    _tensor(f"{where}: members", members, (None,), False)
    if len(members) > n:
        raise UserError(f"{where} has {len(members)} members, more than the "
                        f"{n} references")
    bad = members[(members < 0) | (members >= n)]
    if len(bad):
        raise UserError(f"{where}: member index {int(bad[0])} is outside 0..{n - 1} "
                        f"(the {n} references)")
    if len(torch.unique(members)) != len(members):
        raise UserError(f"{where} lists a member twice")
    _tensor(f"{where}: member_distances", d["member_distances"], (len(members),), True)
    _number(f"{where}: predicted_class", d["predicted_class"], int, 0, rec.classes - 1)
    if d["predicted_class"] != cls:
        raise UserError(f"{where} is of class {d['predicted_class']}, listed under {cls}")
    _number(f"{where}: purity", d["purity"], (float, int), 0, 1)
    _number(f"{where}: delta", d["delta"], int, 0, n)
    _number(f"{where}: min_delta", d["min_delta"], int, 0, n)
    if d["seed_index"] is not None:
        _number(f"{where}: seed_index", d["seed_index"], int, 0, n - 1)
    for f in fields(Region):
        v = d.get(f.name)
        if f.name in ("approximate",) and not isinstance(v, bool):
            raise UserError(f"{where}: {f.name} is not a bool")
        if f.name == "class_name" and not isinstance(v, (str, type(None))):
            raise UserError(f"{where}: class_name is not a string")
        if f.name == "logic" and v is not None:
            _number(f"{where}: logic", v, int, 0, rec.max_logics - 1)
        if f.name == "holdout" and v is not None:
            if not isinstance(v, (tuple, list)) or len(v) != 2:
                raise UserError(f"{where}: holdout is not a pair (inside, pure)")
            _number(f"{where}: holdout inside", v[0], int, 0, n)
            _number(f"{where}: holdout pure", v[1], int, 0, v[0])
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            _tensor(f"{where}: {f.name}", v, tuple(v.shape), True)
        elif not isinstance(v, torch.Tensor):
            _plain(f"{where}: {f.name}", v)
    region = Region.from_dict(d)
    if region.class_name is None and rec.class_names is not None:
        region.class_name = rec.class_names[cls]
    return region


def needs_boundary_points(method: object) -> bool:
    """Whether a summary drawn with heat map ``method`` keeps its regions' boundary
    points: for a method that needs the class gradients there (``logprob``), or one this
    build does not know."""
    from .heatmap import heatmap_method
    if not isinstance(method, str):
        return True
    try:
        return heatmap_method(method).needs_class_gradients
    except UserError:                               # a method this build does not know
        return True


def check_summary_data(data: Any) -> Summary:
    """:meth:`Summary.from_dict`: the summary of saved data, every field checked."""
    from .summary import ClassSummary, Summary
    if not isinstance(data, dict) or "classes" not in data:
        raise UserError("it is not a summary's data")
    if "version" not in data:
        raise UserError("it records no schema version (written by an older repinterp); "
                        "run `repinterp summarize` again")
    if data["version"] not in READABLE_VERSIONS or isinstance(data["version"], bool):
        raise UserError(f"it is of schema version {data['version']!r}; this repinterp "
                        f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    rec = SummaryMeta.parse(data.get("meta"))
    _number("its coverage_target", data.get("coverage_target"), (float, int), 1e-12,
            1)
    _number("its max_regions", data.get("max_regions"), int, 1, 1 << 31)
    if not isinstance(data.get("layer"), str) or not isinstance(data["classes"], list):
        raise UserError("its layer or classes have the wrong type")
    classes: list[ClassSummary] = []
    seen: set[int] = set()
    for c in data["classes"]:
        if not isinstance(c, dict) or not {"cls", "n_images", "covered", "regions"} <= set(c):
            raise UserError("a class entry lacks cls, n_images, covered or regions")
        _number("a class", c["cls"], int, 0, rec.classes - 1)
        k = c["cls"]
        if k in seen:
            raise UserError(f"class {k} is listed twice")
        seen.add(k)
        _number(f"class {k}: n_images", c["n_images"], int, 0, rec.references)
        _number(f"class {k}: covered", c["covered"], int, 0, c["n_images"])
        if not isinstance(c["regions"], list) or len(c["regions"]) > data["max_regions"] \
                * (rec.max_logics if rec.separate_logics else 1):
            raise UserError(f"class {k} has more regions than max_regions")
        regions = [_region(f"class {k}, region {j}", r, rec, k)
                   for j, r in enumerate(c["regions"])]
        classes.append(ClassSummary(cls=k, n_images=c["n_images"], regions=regions,
                                    covered=c["covered"]))
    return Summary(classes=classes, coverage_target=data["coverage_target"],
                   max_regions=data["max_regions"], layer=data["layer"],
                   meta=rec.to_meta())
