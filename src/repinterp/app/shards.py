"""An index's shard files (Parquet, one row per indexed image; the format is described
in :mod:`repinterp.app.index`): writing one atomically, reading one after checking its
bytes against the manifest, and reading single columns when asked for."""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError, first_line
from ..core.index import IndexRows
from .outputs import atomic_path

__all__ = ["ShardColumn"]


def shard_path(out: Path, k: int) -> Path:
    return out / "shards" / f"part-{k:05d}.parquet"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(path: Path, items: list[int], names: list[str], rows: IndexRows) -> str:
    """Write a shard atomically; returns the SHA-256 of what was written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "item": pa.array(items, pa.int64()),
        "name": pa.array(names, pa.string()),
        "prediction": pa.array(rows.predictions.numpy().astype(np.int32)),
        "margin": pa.array(rows.margins.numpy().astype(np.float32)),
        "signs": pa.array([r.tobytes() for r in rows.signs.numpy()], pa.binary()),
        "values": pa.array([r.tobytes() for r in rows.values.view(torch.int16).numpy()],
                           pa.binary()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        digest = file_sha256(tmp)
    return digest


def read_shard(path: Path, bank: int, sha256: str) -> tuple[list[int], IndexRows]:
    """A shard's items and rows, after checking its bytes against ``sha256`` (its names
    are read when asked for: :class:`ShardColumn`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"the index shard {path} cannot be read ({exc.strerror})") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(f"the index shard {path} is corrupt (its checksum does not match "
                        "the manifest); delete it and run `repinterp index` again to "
                        "rebuild it")
    try:
        t = pq.read_table(pa.BufferReader(data))
        n = t.num_rows
        signs = _fixed_rows(t.column("signs"), n, math.ceil(bank / 8), np.uint8)
        values = _fixed_rows(t.column("values"), n, bank, np.float16)
        rows = IndexRows(torch.from_numpy(t.column("prediction").to_numpy().astype(np.int64)),
                         torch.from_numpy(t.column("margin").to_numpy().astype(np.float32)),
                         torch.from_numpy(signs), torch.from_numpy(values))
        items = t.column("item").to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow and numpy raise many types
        raise _corrupt(path, exc) from exc
    return items, rows


def _fixed_rows(column, n: int, width: int, dtype) -> np.ndarray:
    """A binary column whose every value is ``width`` items of ``dtype``, as one
    ``[n, width]`` array read from the column's data buffer (no Python objects)."""
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + n + 1]
    size = width * np.dtype(dtype).itemsize
    if n and not np.array_equal(np.diff(offsets), np.full(n, size)):
        raise ValueError(f"values of {np.diff(offsets).min()}..{np.diff(offsets).max()} "
                         f"bytes, expected {size}")
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]:offsets[0] + n * size]
    return data.view(dtype).reshape(n, width).copy()




class ShardColumn(Sequence):
    """One column of an index's shards (``"name"`` or ``"item"``) in row order, read from
    the shards when asked for: a summary's driver does not hold the names of millions of
    images. :meth:`take` reads each shard it needs once; single lookups keep the last
    few shards read."""

    def __init__(self, paths: list[Path], counts: list[int], column: str, keep: int = 4):
        self.paths, self.column, self.keep = list(paths), column, keep
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self._read: dict[int, list] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same values (like the list it stands for)."""
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return self.take(range(len(self))) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def _shard(self, k: int) -> list:
        if k not in self._read:
            if len(self._read) >= self.keep:
                self._read.pop(next(iter(self._read)))
            self._read[k] = read_column(self.paths[k], self.column)
        return self._read[k]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} indexed images")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self._shard(k)[i - int(self.starts[k])]

    def take(self, indices) -> list:
        """The values at ``indices`` (any order), each shard read once."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} indexed images")
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        out: list = [None] * len(idx)
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(len(self.paths) + 1))
        for k in range(len(self.paths)):
            sel = order[bounds[k]:bounds[k + 1]]
            if len(sel):
                values = self._shard(k)
                for j, r in zip(sel.tolist(), (idx[sel] - self.starts[k]).tolist(),
                                strict=True):
                    out[j] = values[r]
        return out


def check_items(out: Path, k: int, items: list[int], shard_size: int) -> None:
    lo, hi = k * shard_size, (k + 1) * shard_size
    if any(not lo <= i < hi for i in items) or items != sorted(set(items)):
        raise UserError(f"the index shard {shard_path(out, k)} holds rows of another "
                        "shard or twice the same row; delete it and resume")


def _corrupt(path: Path, exc: Exception) -> UserError:
    return UserError(f"the index shard {path} is corrupt ({first_line(exc)}); delete it "
                     "and run `repinterp index` again to rebuild it")


def rows_in(path: Path) -> int:
    """How many rows a shard holds (its footer only)."""
    import pyarrow.parquet as pq
    try:
        return pq.read_metadata(path).num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise _corrupt(path, exc) from exc


def read_column(path: Path, column: str) -> list:
    """One column of a shard (its rows are read where they are used; their bytes are
    checked there)."""
    import pyarrow.parquet as pq
    try:
        t = pq.read_table(path, columns=[column])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise _corrupt(path, exc) from exc
    return t.column(column).to_pylist()
