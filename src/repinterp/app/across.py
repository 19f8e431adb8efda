"""A region's contrastive neighbours as a report shows them
(:mod:`repinterp.core.contrast`): one row per boundary on the region's page, the nearest
images the model decides otherwise on its card, and their JSON in ``summary.json``."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..core.contrast import Crossing
from ..core.region import Region
from .captions import captions
from .stats import class_name
from .thumbs import thumb

__all__ = ["across_view"]


def across_view(region: Region, rows: Sequence[Crossing], images: Any,
                name_of: Callable[[int], str], class_names: Sequence[str] | None,
                card: int = 8) -> dict:
    """``{"rows": [...], "card": [...], "json": [...]}`` for a region and its crossings:
    ``rows`` one per boundary (its classes, how many images cross it alone, its
    neighbours drawn nearest first with their prediction and relative distance),
    ``card`` the ``card`` nearest neighbours over all boundaries that the model
    predicts as another class than the region's (nearest by relative distance), and
    ``json`` the same facts without pictures."""
    drawn: dict[int, Any] = {}

    def tile(c: Crossing, k: int) -> dict:
        i = int(c.indices[k])
        if i not in drawn:
            drawn[i] = thumb(images[i])
        return {"src": drawn[i], "index": i, "name": name_of(i),
                "boundary": c.boundary + 1,
                "predicted": class_name(class_names, int(c.predictions[k])),
                "other": int(c.predictions[k]) != region.predicted_class,
                "relative": float(c.relative[k])}

    out_rows, json_rows, others = [], [], []
    for c in rows:
        tiles = [tile(c, k) for k in range(len(c.indices))]
        for t, short in zip(tiles, captions([t["name"] for t in tiles]), strict=True):
            t["short"] = short
        pair = [class_name(class_names, c.pair[0]), class_name(class_names, c.pair[1])]
        out_rows.append({"boundary": c.boundary + 1, "pair": pair, "count": c.count,
                         "tiles": tiles})
        json_rows.append({"boundary": c.boundary + 1, "classes": pair, "count": c.count,
                          "nearest": [{k: t[k] for k in ("index", "name", "predicted",
                                                         "relative")} for t in tiles]})
        others += [t for t in tiles if t["other"]]
    # an image is outside by one boundary only: it is in one row at most
    nearest = sorted(others, key=lambda t: (t["relative"], t["index"]))[:card]
    for t, short in zip(nearest, captions([t["name"] for t in nearest]), strict=True):
        t["card_short"] = short
    return {"rows": out_rows, "card": nearest, "json": json_rows,
            "crossed": sum(1 for c in rows if c.count)}
