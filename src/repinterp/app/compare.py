"""``repinterp compare``: two models summarised on the same reference images and the
summaries compared (:func:`repinterp.core.compare.compare_summaries`), written as one
output folder: ``compare.html``, ``comparison.json`` and the two summaries
(``summary-a.pt``, ``summary-b.pt``, which ``explain --summary`` reads)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..core import defaults
from ..core.compare import (
    MIN_JACCARD,
    MIN_PART,
    MIN_SHARE,
    STATUSES,
    Change,
    Comparison,
    check_thresholds,
    compare_summaries,
)
from ..core.errors import UserError
from ..core.summary import Summary
from ..core.words import layer_words, plural
from .captions import captions
from .io import save_summary
from .outputs import check_output, output_folder, write_json, write_text
from .pipeline import Family, FitJob, Fitted, ModelSource, fit_job, summarize_references
from .report import model_words
from .thumbs import THUMBNAIL, colour_bar_css, thumb

__all__ = ["CompareJob", "Compared", "compare_job", "write_comparison"]

#: closest members drawn per region, and images drawn that changed class
TOP = 6
DRAWN_CHANGED = 120
#: what each status means, as the report says it
MEANING = {
    "new": "regions of model B whose images model A did not explain together",
    "gone": "regions of model A whose images model B no longer explains together",
    "moved": "the same images, now explained as another class",
    "split": "one region of model A is two or more regions of model B",
    "merged": "two or more regions of model A are one region of model B",
    "kept": "the same images for the same reason and class",
}


@dataclass
class CompareJob(FitJob):
    """A whole ``compare``: a :class:`~repinterp.app.pipeline.FitJob` for the first
    model (``model``), the second model (``model_b``: the same images, layer and
    settings), the summaries' settings, the comparison's thresholds and the output
    folder."""

    model_b: ModelSource | None = None
    out: str | os.PathLike = "out/compare"
    coverage: float = defaults.COVERAGE
    max_regions: int = defaults.MAX_REGIONS
    target_purity: float | None = defaults.TARGET_PURITY
    min_jaccard: float = MIN_JACCARD
    min_share: float = MIN_SHARE
    min_part: float = MIN_PART
    meta: dict = field(default_factory=dict)

    @property
    def inputs(self) -> list[str | None]:
        b = self.model_b
        return [*super().inputs, *((b.model_file, b.weights) if b else ())]


@dataclass
class Compared:
    """What a compare wrote: the comparison, the report's path and one line saying what
    changed."""

    comparison: Comparison
    report: Path
    message: str


def compare_job(job: CompareJob, families: Mapping[str, Family] | None = None
                ) -> Compared:
    """Run ``job``: check the output folder before any work; fit and summarise each
    model on the references of ``job.data`` (:func:`~repinterp.app.pipeline.fit_job`
    and :func:`~repinterp.app.pipeline.summarize_references`, as ``summarize`` does);
    refuse two models that read the images differently; compare the summaries and write
    the folder as one unit."""
    if job.model_b is None:
        raise UserError("compare needs a second model")
    if job.heldout:
        raise UserError("compare takes no held-out images: it compares the regions of "
                        "the reference images")
    check_thresholds(job.min_jaccard, job.min_share, job.min_part)
    check_output(job.out, job.inputs)
    sides: list[tuple[Fitted, Summary]] = []
    for source in (job.model, job.model_b):
        fitted, _ = fit_job(replace(job, model=source), families)
        summary, _ = summarize_references(
            fitted, coverage=job.coverage, max_regions=job.max_regions,
            target_purity=job.target_purity, meta={"model": source.name, "data": job.data,
                  "class_names": fitted.class_names})
        sides.append((fitted, summary))
    (fa, sa), (fb, sb) = sides
    if fa.references_digest() != fb.references_digest():
        raise UserError("the two models read the images differently (other input "
                        "channels, size or normalisation): give models of the same input, "
                        "or {param}", param="normalize", api="normalize=")
    comparison = compare_summaries(
        sa, sb, predictions_a=fa.interp.predictions_, predictions_b=fb.interp.predictions_,
        min_jaccard=job.min_jaccard, min_share=job.min_share, min_part=job.min_part)
    meta = {"model_a": job.model.name, "model_b": job.model_b.name, "data": job.data,
            "references": comparison.references, "layer_a": sa.layer,
            "layer_b": sb.layer, **job.meta}
    with output_folder(job.out, job.inputs) as tmp:
        save_summary(tmp / "summary-a.pt", sa)
        save_summary(tmp / "summary-b.pt", sb)
        write_comparison(tmp, comparison, sides, fa.references.names, meta=meta)
    return Compared(comparison, Path(job.out) / "compare.html", _message(comparison,
                                                                           job.out))


def _message(c: Comparison, out: str | os.PathLike) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in c.counts.items() if n) or "no region"
    return (f"{counts}; {plural(len(c.class_changed), 'image')} changed class, "
            f"{plural(len(c.region_changed), 'image')} changed region; report: "
            f"{Path(out) / 'compare.html'}")


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("repinterp.app", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.filters["plural"] = lambda n, word, many=None: plural(n, word, many)
    env.filters["count"] = lambda n: f"{n:,}"
    return env


def write_comparison(out_dir: str | Path, comparison: Comparison,
                     sides: Sequence[tuple[Fitted, Summary]], names: Sequence[str],
                     *, meta: dict | None = None, top: int = TOP,
                     drawn: int = DRAWN_CHANGED) -> Path:
    """Write ``compare.html`` and ``comparison.json`` of ``comparison`` into ``out_dir``
    (each file atomically; :func:`compare_job` puts them in one output folder).
    ``sides``: each model's fit and summary (the regions' closest ``top`` members are
    drawn with the heat map of the model that made the region); ``names``: the
    references' names. The page leads with what changed most (new, gone and moved
    regions, then split and merged ones, then those kept) and ends with the images that
    changed class (the first ``drawn`` drawn)."""
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    (fa, sa), (fb, sb) = sides
    images = fa.references.images
    letters = {"a": (fa, sa), "b": (fb, sb)}

    def name_of(i: int) -> str:
        return str(names[i]) if names else f"#{i}"

    def region_view(side: str, k: int) -> dict:
        fitted, summary = letters[side]
        r = summary.regions[k]
        idx = r.members[:top]
        heat = fitted.interp.reference_heatmap(r, idx) if len(idx) else []
        tiles = [{"src": thumb(images[i], h), "name": name_of(i), "seed": i == r.seed_index}
                 for i, h in zip(idx.tolist(), heat, strict=True)]
        for t, short in zip(tiles, captions([t["name"] for t in tiles]), strict=True):
            t["short"] = short
        return {"label": f"{side.upper()}{k + 1}", "class_name": summary.class_name(
            r.predicted_class), "size": r.size, "purity": r.purity, "tiles": tiles}

    def change_view(c: Change) -> dict:
        other = "b" if c.status == "gone" else "a"
        return {"status": c.status, "jaccard": c.jaccard, "changed": c.changed,
                "entered": c.entered, "left": c.left, "size_a": c.size_a,
                "size_b": c.size_b,
                "a": [region_view("a", k) for k in c.regions_a],
                "b": [region_view("b", k) for k in c.regions_b],
                "overlap": None if c.overlap is None else {
                    "label": f"{other.upper()}{c.overlap + 1}",
                    "share": c.overlap_share}}

    groups = [{"status": s, "meaning": MEANING[s],
               "changes": [change_view(c) for c in comparison.of_status(s)]}
              for s in STATUSES]
    moved_class = comparison.class_changed.tolist()
    assert comparison.class_a is not None and comparison.class_b is not None
    assert comparison.region_a is not None and comparison.region_b is not None

    def where(side: str, k: int) -> str:
        return f"{side.upper()}{k + 1}" if k >= 0 else "none"

    changed = [{"name": name_of(i), "class_a": sa.class_name(int(comparison.class_a[i])),
                "class_b": sb.class_name(int(comparison.class_b[i])),
                "region_a": where("a", int(comparison.region_a[i])),
                "region_b": where("b", int(comparison.region_b[i])),
                **({"src": thumb(images[i])} if n < drawn else {})}
               for n, i in enumerate(moved_class)]
    for t, short in zip(changed, captions([t["name"] for t in changed]), strict=True):
        t["short"] = short
    facts = [f"Model A: {model_words(meta.get('model_a')) or 'not recorded'}",
             f"Model B: {model_words(meta.get('model_b')) or 'not recorded'}",
             " \u00b7 ".join(p for p in (
                 plural(comparison.references, "reference image"),
                 f"images: {meta['data']}" if meta.get("data") else "",
                 _layers(sa.layer, sb.layer)) if p)]
    html = _environment().get_template("compare.html").render(
        title="repinterp comparison", facts=facts, groups=groups,
        unchanged=all(c.status == "kept" and not c.changed for c in comparison.changes)
        and not changed and not len(comparison.region_changed),
        changed=changed, drawn=min(drawn, len(changed)),
        region_changed=len(comparison.region_changed), references=comparison.references,
        thresholds=comparison.thresholds, thumb=THUMBNAIL, colour_bar=colour_bar_css())
    data = comparison.to_dict()
    for row in data.get("images_changed", []):
        row["name"] = name_of(row["index"])
    write_json(out_dir / "comparison.json", {"meta": meta, **data})
    write_text(out_dir / "compare.html", html)
    return out_dir / "compare.html"


def _layers(a: str, b: str) -> str:
    if a == b:
        return f"Split after {layer_words(a)}" if a else ""
    return f"Split after {layer_words(a)} (A) and {layer_words(b)} (B)"
