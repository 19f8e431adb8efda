"""The schemas of repinterp's saved state: ``summary.pt``, an index's ``manifest.json``,
and the fit's facts a report states; each with a version, checked field by field when
read.

``summary.pt`` is one file: a header and a payload::

    repinterp summary\\n
    version N\\n
    sha256 HEX\\n
    PAYLOAD

``PAYLOAD`` is :meth:`~repinterp.core.summary.Summary.to_dict` saved with
``torch.save`` (read back with ``weights_only=True``: no code is unpickled; ``N`` one of
:data:`~repinterp.core.summary_schema.READABLE_VERSIONS`), ``HEX`` its
SHA-256: any changed byte of the file (header or payload) is refused before the payload
is read, and what it holds is then checked field by field
(:meth:`~repinterp.core.summary.Summary.from_dict`). The record of a summary's meta is
:class:`~repinterp.core.summary.SummaryMeta`.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Mapping
from typing import Any, TypedDict

import torch

from ..core.errors import UserError, first_line
from ..core.summary import SUMMARY_VERSION, Summary
from ..core.summary_schema import READABLE_VERSIONS

__all__ = ["MANIFEST_VERSION", "SUMMARY_MAGIC", "FitMeta", "IndexManifest",
           "check_against_model", "check_manifest", "manifest_checksum", "pack_summary",
           "unpack_summary"]

SUMMARY_MAGIC = b"repinterp summary\n"
#: The version of ``manifest.json`` (and of ``source.parquet``'s columns) this reads.
MANIFEST_VERSION = 2
_HEX = re.compile(r"[0-9a-f]{64}")


# --- summary.pt -------------------------------------------------------------------------
def pack_summary(summary: Summary) -> bytes:
    """The bytes of ``summary.pt`` for ``summary`` (header, digest, payload)."""
    buf = io.BytesIO()
    torch.save(summary.to_dict(), buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    return SUMMARY_MAGIC + f"version {SUMMARY_VERSION}\nsha256 {digest}\n".encode() + payload


def unpack_summary(blob: bytes) -> Summary:
    """The summary of ``summary.pt``'s bytes, after its header, its digest and then every
    field are checked. Anything else is a :class:`UserError` whose message completes
    ``"PATH "`` (e.g. ``is corrupt (...)``)."""
    if not blob.startswith(SUMMARY_MAGIC):
        raise UserError(_unframed(blob))
    rest = blob[len(SUMMARY_MAGIC):]
    lines = rest.split(b"\n", 2)
    if len(lines) < 3:
        raise UserError("is corrupt (its header is cut short)")
    version, digest, payload = lines
    m = re.fullmatch(rb"version (\d{1,6})", version)
    if m is None:
        raise UserError("is corrupt (its header has no version line)")
    version_number = int(m.group(1))
    if version_number not in READABLE_VERSIONS:
        raise UserError(f"is a summary of schema version {version_number}; this repinterp "
                        f"reads versions {', '.join(map(str, READABLE_VERSIONS))}: run "
                        "`repinterp summarize` again")
    d = re.fullmatch(rb"sha256 ([0-9a-f]{64})", digest)
    if d is None or d.group(1).decode() != hashlib.sha256(payload).hexdigest():
        raise UserError("is corrupt (its checksum does not match its contents); run "
                        "`repinterp summarize` again")
    try:
        data = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise UserError(f"is not a summary written by repinterp ({first_line(exc)})"
                        ) from exc
    if isinstance(data, dict) and data.get("version", version_number) != version_number:
        raise UserError(f"is corrupt (its header says version {version_number}, its "
                        f"contents {data.get('version')!r})")
    try:
        return Summary.from_dict(data)
    except UserError as exc:
        raise UserError(f"is refused: {exc}") from exc


def _unframed(blob: bytes) -> str:
    """Why bytes without the header are refused: a summary saved by an older repinterp
    (``torch.save`` of its dict, no version), or not a summary at all."""
    try:
        data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        return f"is not a summary written by repinterp ({first_line(exc)})"
    if isinstance(data, dict) and "classes" in data:
        return ("was written by an older repinterp (it has no schema version and no "
                "checksum); run `repinterp summarize` again")
    return "is not a summary written by repinterp (no summary header)"


def check_against_model(summary: Summary, classes: int, feature_shape: tuple[int, ...],
                        where: str = "the summary") -> None:
    """Refuse ``summary`` for a model with another number of ``classes`` or another
    ``feature_shape`` (one feature map, at the summary's layer) than it records."""
    rec = summary.record
    if rec.classes != int(classes):
        raise UserError(f"{where} was made for a model of {rec.classes} classes; this "
                        f"model has {int(classes)}: give the model it was made with")
    if tuple(rec.feature_shape) != tuple(int(s) for s in feature_shape):
        raise UserError(f"{where} records features of shape {tuple(rec.feature_shape)} "
                        f"after layer {summary.layer!r}; this model gives "
                        f"{tuple(feature_shape)}: give the model it was made with")


# --- the fit ----------------------------------------------------------------------------
class FitMeta(TypedDict):
    """What a report and ``summary.json`` say about a fit
    (:meth:`repinterp.app.pipeline.Fitted.meta`)."""

    layer: str
    references: int
    skipped_files: int
    approximate: bool
    heatmap_method: str
    heatmap_grid: str


# --- manifest.json ----------------------------------------------------------------------
class IndexManifest(TypedDict, total=False):
    """An index's ``manifest.json`` (version :data:`MANIFEST_VERSION`; see
    :mod:`repinterp.app.index`). ``source_sha256`` only for a source with a listing;
    ``shards`` once every shard is written."""

    version: int
    model: dict | str
    model_digest: str
    layer: str
    data: dict
    items: int
    shard_size: int
    bank: int
    bank_size: int
    pilot: int
    per_origin: int
    seed: int
    feature_shape: list[int]
    classes: int
    bank_sha256: str
    source_sha256: str
    shards: list[str]
    checksum: str


#: required field -> its JSON type (``shards`` and ``source_sha256`` may be absent)
_MANIFEST_FIELDS: dict[str, Any] = {
    "version": int, "model": (dict, str), "model_digest": str, "layer": str, "data": dict,
    "items": int, "shard_size": int, "bank": int, "bank_size": int, "pilot": int,
    "per_origin": int, "seed": int, "feature_shape": list, "classes": int,
    "bank_sha256": str, "checksum": str}
_OPTIONAL = {"source_sha256": str, "shards": list}


def manifest_checksum(m: Mapping[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON, its ``checksum`` left out."""
    import json
    body = {k: v for k, v in m.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_manifest(m: Any, path: Any) -> IndexManifest:
    """``m`` (the JSON of ``path``) as a checked :class:`IndexManifest`: its version,
    every field's presence and type, digests that are SHA-256 hex, positive sizes and
    counts, one digest per shard, and its own ``checksum``. Anything else is a
    :class:`UserError` naming ``path`` and the field."""
    if not isinstance(m, dict):
        raise UserError(f"{path} is not an index manifest")
    if m.get("version") != MANIFEST_VERSION:
        got = m.get("version")
        raise UserError(f"{path} is not a version {MANIFEST_VERSION} index manifest "
                        f"({'version ' + repr(got) if got is not None else 'no version'}); "
                        "rebuild the index with `repinterp index`")
    unknown = [k for k in m if k not in _MANIFEST_FIELDS and k not in _OPTIONAL]
    if unknown:
        raise UserError(f"{path} has an unknown field {unknown[0]!r}; rebuild the index")
    for key, kind in [*_MANIFEST_FIELDS.items(), *_OPTIONAL.items()]:
        if key not in m:
            if key in _OPTIONAL:
                continue
            raise UserError(f"{path} has no {key!r}: it was edited, or written by an older "
                            "repinterp; rebuild the index")
        if not isinstance(m[key], kind) or isinstance(m[key], bool):
            raise UserError(f"{path}: {key!r} has the wrong type "
                            f"({type(m[key]).__name__}); rebuild the index")
    if m["checksum"] != manifest_checksum(m):
        raise UserError(f"{path} was edited after the index was built (its checksum does "
                        "not match); rebuild the index")
    _check_values(m, path)
    return m  # type: ignore[return-value]


def _check_values(m: dict, path: Any) -> None:
    def bad(key: str, why: str) -> UserError:
        return UserError(f"{path}: {key!r} {why}; rebuild the index")

    for key in ("model_digest", "bank_sha256", *(["source_sha256"] if "source_sha256"
                                                 in m else [])):
        if not _HEX.fullmatch(m[key]):
            raise bad(key, "is not a SHA-256 digest")
    for key, low in (("items", 0), ("shard_size", 1), ("bank", 1), ("bank_size", 1),
                     ("pilot", 2), ("per_origin", 1), ("classes", 1)):
        if m[key] < low:
            raise bad(key, f"is {m[key]}, below {low}")
    if m["bank_size"] > m["bank"]:
        raise bad("bank_size", f"is {m['bank_size']}, more than the bank of {m['bank']}")
    shape = m["feature_shape"]
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                            for s in shape):
        raise bad("feature_shape", f"is {shape!r}, not a list of positive sizes")
    if not m["layer"]:
        raise bad("layer", "is empty")
    if "shards" in m:
        want = math.ceil(m["items"] / m["shard_size"])
        if len(m["shards"]) != want:
            raise bad("shards", f"lists {len(m['shards'])} shards, not {want}")
        if not all(isinstance(s, str) and _HEX.fullmatch(s) for s in m["shards"]):
            raise bad("shards", "holds a value that is not a SHA-256 digest")
