"""The memberships of a summary: one row per (region, member), written as
``members.csv`` (for spreadsheets: text cells that would run as formulas are quoted)
and ``members.parquet`` (for pandas: the raw values). Derived outputs: nothing reads
them back."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from ..core.summary import Summary
from .outputs import atomic_path

__all__ = ["MEMBER_COLUMNS", "membership_blocks", "membership_rows", "write_memberships"]


#: The memberships' columns, in file order
MEMBER_COLUMNS = ("image", "index", "predicted", "label", "region", "logic", "rank",
                  "distance")


def membership_blocks(summary: Summary, names: Sequence[str] | None = None,
                      predictions: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None,
                      numbers: Sequence[int] | None = None) -> Iterator[dict[str, list]]:
    """Every (region, member) pair as columns, one block per region: ``image`` (name),
    ``index``, ``predicted``, ``label`` (-1 unknown or none), ``region`` (1-based, the
    report's numbering, ``numbers`` when given), ``logic``, ``rank`` (1 = nearest the
    seed) and ``distance``. ``names`` may be read lazily: a ``take(indices)`` method is
    used when it has one (one read per shard of an index, not one per member)."""
    numbers = list(numbers) if numbers is not None else \
        list(range(1, len(summary.regions) + 1))
    for number, region in zip(numbers, summary.regions, strict=True):
        idx = region.members.tolist()
        n = len(idx)
        if names is None:
            image = [f"#{i}" for i in idx]
        else:
            take = getattr(names, "take", None)
            image = take(idx) if take is not None else [names[i] for i in idx]
        yield {"image": image, "index": idx,
               "predicted": (predictions[region.members].tolist() if predictions is not None
                             else [region.predicted_class] * n),
               "label": (labels[region.members].tolist() if labels is not None
                         else [-1] * n),
               "region": [number] * n,
               "logic": [-1 if region.logic is None else region.logic] * n,
               "rank": list(range(1, n + 1)),
               "distance": region.member_distances.double().tolist()}


def membership_rows(summary: Summary, names: Sequence[str] | None = None,
                    predictions: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None,
                    numbers: Sequence[int] | None = None) -> dict[str, list]:
    """:func:`membership_blocks` of every region as one set of columns."""
    cols: dict[str, list] = {k: [] for k in MEMBER_COLUMNS}
    for block in membership_blocks(summary, names, predictions, labels, numbers):
        for k in cols:
            cols[k] += block[k]
    return cols


def write_memberships(out_dir: str | Path, blocks: Iterable[dict[str, list]]) -> None:
    """``members.csv`` and ``members.parquet`` of :func:`membership_blocks`, atomically,
    written block by block (the memberships of a summary of millions of images are
    never held at once)."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    schema = pa.schema([("image", pa.string()),
                        *[(k, pa.int64()) for k in MEMBER_COLUMNS[1:-1]],
                        ("distance", pa.float64())])
    with atomic_path(out_dir / "members.csv") as csv_tmp, \
            atomic_path(out_dir / "members.parquet") as pq_tmp, \
            open(csv_tmp, "w", newline="", encoding="utf-8") as fh, \
            pq.ParquetWriter(pq_tmp, schema) as parquet:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MEMBER_COLUMNS)
        for block in blocks:
            cells = [[_csv_safe(v) for v in block[k]] if k == "image" else block[k]
                     for k in MEMBER_COLUMNS]
            writer.writerows(zip(*cells, strict=True))
            parquet.write_table(pa.table({k: block[k] for k in MEMBER_COLUMNS},
                                         schema=schema))


def _csv_safe(text: str) -> str:
    """A text cell as a spreadsheet reads it as text: a leading ``=``, ``+``, ``-``,
    ``@``, tab or carriage return (a formula to Excel, LibreOffice, Google Sheets) gets
    a ``'`` in front, as OWASP recommends for CSV exports. Parquet keeps the raw text."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
