"""The built-in demo: summarise a Fashion-MNIST CNN into representative regions."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..app.outputs import check_output
from ..app.pipeline import source_fingerprint, write_summary
from ..app.stats import heldout_figures
from ..core import defaults
from ..core.interpreter import RepresentativeInterpreter
from .data import FASHION_CLASSES, load_fashion_mnist
from .models import load_demo_model

__all__ = ["run_demo"]


#: The demo's |Q|: more boundaries per seed than the library's default, for purer regions
#: (docs/method.md)
DEMO_NUM_BOUNDARIES = 200


def run_demo(out: str | Path = "out/demo", *, seed: int = 0, references: int = 10000,
             coverage: float = defaults.COVERAGE, max_regions: int = defaults.MAX_REGIONS,
             num_boundaries: int = DEMO_NUM_BOUNDARIES, min_purity: float | str | None = "auto",
             target_purity: float | None = defaults.TARGET_PURITY,
             data_root: str | None = None, progress: bool = True, retrain: bool = False,
             log: Callable[[str], None] = print) -> dict:
    """Load the demo CNN (:func:`~repinterp.demo.models.load_demo_model`: shipped,
    cached or trained now; ``retrain`` trains it again), summarise ``references``
    training images into regions, measure the regions on the test split and write the
    report (``min_purity``: the interpreter's purity stop; ``target_purity``: the
    summary's purity contract). ``log`` gets two lines: the
    model, then the result and where the report is.

    Returns the headline figures (also stored in ``summary.json`` under ``meta``).
    """
    check_output(out, [data_root])
    start = time.perf_counter()
    model, meta = load_demo_model(seed=0, data_root=data_root, progress=progress,
                                  retrain=retrain)
    log(f"model: {meta['arch']}, weights {meta['weights']}, test accuracy "
        f"{100 * meta['test_accuracy']:.2f}%")
    x_train, y_train = load_fashion_mnist("train", data_root)
    x_test, _ = load_fashion_mnist("test", data_root)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x_train), generator=gen)[:references]
    refs = x_train[idx]

    interp = RepresentativeInterpreter(model, "features", num_boundaries=num_boundaries,
                                       seed=seed, progress=progress, min_purity=min_purity,
                                       class_names=FASHION_CLASSES).fit(refs)
    summary = interp.summarize(coverage=coverage, max_regions=max_regions,
                               target_purity=target_purity)
    test_feats = interp.features(x_test)
    test_preds = interp.predict_features(test_feats)
    held = heldout_figures(summary.regions, test_feats, test_preds)
    stats = held["stats"]
    figures = {
        "model": f"{meta['arch']} trained {meta['epochs']} epochs (training seed {meta['seed']})",
        "test_accuracy": round(meta["test_accuracy"], 4),
        "layer": interp.layer_, "references": len(refs), "num_boundaries": num_boundaries,
        "seed": seed, "min_purity": min_purity, "regions": len(summary.regions),
        "regions_per_class": {FASHION_CLASSES[c.cls]: len(c.regions) for c in summary},
        "coverage_per_class": {FASHION_CLASSES[c.cls]: round(c.coverage, 4) for c in summary},
        "heldout_pooled_purity": None if held["pooled_purity"] is None
        else round(held["pooled_purity"], 4),
        "heldout_share_in_a_region": round(held["share_in_a_region"], 4),
    }
    figures["seconds"] = round(time.perf_counter() - start, 1)
    names = [f"train[{i}]" for i in idx.tolist()]
    summary.meta.update(model=figures["model"], data="fashion-mnist train",
                        class_names=list(FASHION_CLASSES), **source_fingerprint(model, refs))
    report = write_summary(out, summary, refs, heatmap=interp.heatmap,
                           reference_heatmap=interp.reference_heatmap,
                           across=interp.across, class_names=FASHION_CLASSES,
                           stats=stats, names=names,
                           labels=y_train[idx], predictions=interp.predictions_,
                           title="repinterp demo: Fashion-MNIST", meta=figures)
    purity = figures["heldout_pooled_purity"]
    log(f"{len(summary.regions)} regions over {len(summary.classes)} classes; on the test "
        f"set: purity {'-' if purity is None else f'{100 * purity:.2f}%'}, "
        f"{100 * figures['heldout_share_in_a_region']:.1f}% of images in a region; "
        f"{time.perf_counter() - start:.0f} s in all; report: {report}")
    return figures
