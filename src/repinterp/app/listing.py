"""What a region index indexed: the listing of its source's files (name, size,
modification time, and the SHA-256 of a file read whole), written as ``source.parquet``
and checked against the source when the index is used."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import UserError, first_line
from .outputs import atomic_path
from .schema import IndexManifest
from .shards import file_sha256

__all__ = ["check_listing", "with_digests", "write_listing"]


def _array_file(source: Any) -> Path | None:
    """The one file a source reads whole (an array file, one image), or None."""
    root = getattr(source, "root", None) or getattr(source, "_root", None)
    return Path(root) if root is not None and Path(root).is_file() else None


def with_digests(source: Any, listing: list[tuple[str, int, int]]
                  ) -> list[tuple[str, int, int, str | None]]:
    """The listing with the SHA-256 of a file read whole (None for a folder's files)."""
    whole = _array_file(source)
    if whole is None or len(listing) != 1:
        return [(*row, None) for row in listing]
    try:
        return [(*listing[0], file_sha256(whole))]
    except OSError as exc:
        raise UserError(f"{whole} cannot be read ({exc.strerror})") from exc


def write_listing(path: Path, listing: list[tuple[str, int, int, str | None]]) -> str:
    """Write the source listing as Parquet; returns its SHA-256."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    names, sizes, times, sums = (zip(*listing, strict=True) if listing
                                 else ((), (), (), ()))
    table = pa.table({"name": pa.array(names, pa.string()),
                      "size": pa.array(sizes, pa.int64()),
                      "mtime_ns": pa.array(times, pa.int64()),
                      "sha256": pa.array(sums, pa.string())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        return file_sha256(tmp)


def check_listing(out: Path, manifest: IndexManifest, source: Any) -> None:
    """Refuse a source that is not what was indexed: the first file added, removed or
    changed (size or modification time) since, by name; and a file read whole (an array
    file) whose contents changed (its SHA-256), even with the same size and time."""
    import pyarrow.parquet as pq
    if "source_sha256" not in manifest or not hasattr(source, "listing"):
        return
    path = out / "source.parquet"
    if not path.is_file() or file_sha256(path) != manifest["source_sha256"]:
        raise UserError(f"{path} is missing or corrupt; rebuild the index")
    try:
        t = pq.read_table(path)
        cols = [t.column(c).to_pylist() for c in ("name", "size", "mtime_ns", "sha256")]
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise UserError(f"{path} is corrupt ({first_line(exc)}); rebuild the index") from exc
    then = list(zip(*cols[:3], strict=True))
    now = source.listing()
    where = f"the images indexed in {out} changed since `repinterp index`"
    if now == then:
        recorded = cols[3][0] if len(cols[3]) == 1 else None
        whole = _array_file(source)
        if recorded is not None and whole is not None and file_sha256(whole) != recorded:
            raise UserError(f"{where}: {then[0][0]} was modified (its contents differ, "
                            "with the same size and modification time); rebuild the index")
        return
    old_names = {n for n, _, _ in then}
    new_names = {n for n, _, _ in now}
    for k, (a, b) in enumerate(zip(then, now, strict=False)):
        if a == b:
            continue
        if b[0] not in old_names:
            raise UserError(f"{where}: {b[0]} was added; rebuild the index")
        if a[0] not in new_names:
            raise UserError(f"{where}: {a[0]} was removed; rebuild the index")
        if a[0] == b[0]:
            raise UserError(f"{where}: {a[0]} was modified; rebuild the index")
        raise UserError(f"{where}: item {k} was {a[0]}, now {b[0]}; rebuild the index")
    extra = now[len(then):] or then[len(now):]
    verb = "added" if len(now) > len(then) else "removed"
    raise UserError(f"{where}: {extra[0][0]} was {verb}; rebuild the index")
