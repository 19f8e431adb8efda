"""What changed between two models (:func:`repinterp.core.compare.compare_summaries`):
the shipped demo VGG against a copy fine-tuned briefly on Fashion-MNIST with a planted
shortcut, both summarised on the same references. Is the shortcut's region reported
new, and how many images changed class and region?

    python -m benchmarks.compare --out docs [--screens]

Model A is the shipped demo VGG (:func:`repinterp.demo.models.load_demo_model`); model B
is a copy fine-tuned (``--epochs`` epochs, Adam with a one-cycle rate 1e-3, the demo's
``train_classifier``) on ``--train`` training images, 30% of them drawn at random with
the mark of ``square-topleft-tshirt`` (:mod:`repinterp.demo.shortcut`: a 4x4 square at
(1, 1)) and labelled T-shirt whatever they show. The references are ``--references``
test images with the mark pasted at random on 30% of them, whatever their class; each
model is split at ``features`` and summarised with the library's defaults. The
shortcut's region is B's region holding the most marked references predicted as
T-shirt.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from benchmarks import harness
from repinterp import RepresentativeInterpreter
from repinterp.core.compare import compare_summaries
from repinterp.demo.data import load_fashion_mnist
from repinterp.demo.models import train_classifier
from repinterp.demo.shortcut import SETTINGS, paste_mark, shortcut_split

#: the share of the fine-tuning images that carry the mark, all labelled as its class
POISONED = 0.3


def run(references: int, train: int, epochs: int, seed: int,
        screens: Path | None = None) -> dict:
    setting = SETTINGS[0]
    model_a, _ = harness.demo_model("vgg")
    x, y = load_fashion_mnist("train")
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x), generator=gen)[:train]
    poisoned = torch.rand(train, generator=gen) < POISONED
    x = paste_mark(x[pick], setting, poisoned)
    y = torch.where(poisoned, setting.cls, y[pick])
    model_b = copy.deepcopy(model_a)
    train_classifier(model_b, x, y, epochs=epochs, lr=1e-3, seed=seed, progress=False)
    model_b.eval()
    refs, labels, marked, _ = shortcut_split(setting, "test", seed=seed)
    refs, labels, marked = refs[:references], labels[:references], marked[:references]
    sides = []
    for model in (model_a, model_b):
        interp = RepresentativeInterpreter(model, "features", seed=seed,
                                           progress=False).fit(refs)
        sides.append((interp.summarize(), interp.predictions_))
    (sa, pa), (sb, pb) = sides
    c = compare_summaries(sa, sb, predictions_a=pa, predictions_b=pb)
    if screens is not None:
        screenshot(model_a, model_b, refs, screens)
    cls = setting.cls
    k = max(range(len(sb.regions)), key=lambda j: int(
        (marked[sb.regions[j].members] & (pb[sb.regions[j].members] == cls)).sum()))
    shortcut = sb.regions[k]
    change = next(n for n, ch in enumerate(c.changes) if k in ch.regions_b)
    inside = marked[shortcut.members]
    moved = c.class_changed
    return {
        "setting": setting.name, "references": references, "marked_references":
        int(marked.sum()), "fine_tune": {"images": train, "epochs": epochs, "lr": 1e-3,
                                         "poisoned": POISONED},
        "marked_predicted_as_class": {"a": round(float((pa[marked] == cls).float().mean()), 4),
                                      "b": round(float((pb[marked] == cls).float().mean()), 4)},
        "clean_accuracy": {"a": round(float((pa[~marked] == labels[~marked]).float().mean()), 4),
                           "b": round(float((pb[~marked] == labels[~marked]).float().mean()),
                                      4)},
        "regions": {"a": len(sa.regions), "b": len(sb.regions)}, "counts": c.counts,
        "shortcut_region": {"status": c.changes[change].status, "rank": change + 1,
                            "size": shortcut.size, "marked_share": round(
                                float(inside.float().mean()), 4),
                            "of_marked_as_class": round(float(inside.sum()) / max(int(
                                (marked & (pb == cls)).sum()), 1), 4),
                            "overlap_share": round(c.changes[change].overlap_share, 4)},
        "images_changed_class": len(moved),
        "images_changed_class_marked": int(marked[moved].sum()),
        "images_changed_region": len(c.region_changed),
        "changes": [{"status": ch.status, "regions_a": list(ch.regions_a),
                     "regions_b": list(ch.regions_b), "jaccard": round(ch.jaccard, 4),
                     "changed": ch.changed} for ch in c.changes],
    }


def screenshot(model_a, model_b, refs: torch.Tensor, out: Path) -> None:
    """The same comparison as a user runs it (``repinterp compare --arch vgg --weights
    A --weights B`` on the references written as PNGs), photographed in headless
    chromium: ``out/compare-report.png``."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    from repinterp.cli import main as cli
    from repinterp.demo.data import FASHION_MEAN, FASHION_STD
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pixels = ((refs * FASHION_STD + FASHION_MEAN).clamp(0, 1) * 255).round()
        for i, img in enumerate(pixels.to(torch.uint8).numpy()):
            (root / "refs").mkdir(exist_ok=True)
            Image.fromarray(img[0]).save(root / "refs" / f"test-{i:04d}.png")
        for name, model in (("a", model_a), ("b", model_b)):
            torch.save(model.state_dict(), root / f"{name}.pt")
        code = cli(["compare", "--arch", "vgg", "--weights", str(root / "a.pt"),
                    "--weights", str(root / "b.pt"), "--data", str(root / "refs"),
                    "--out", str(root / "cmp"), "--quiet"])
        if code != 0:
            raise SystemExit(f"repinterp compare exited {code}")
        with harness.browser(height=1400) as driver:
            driver.get((root / "cmp" / "compare.html").resolve().as_uri())
            driver.find_element(By.TAG_NAME, "main").screenshot(str(out / "compare-report.png"))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--references", type=int, default=2000)
    p.add_argument("--train", type=int, default=12000)
    p.add_argument("--epochs", type=int, default=2)
    harness.add_seed(p)
    p.add_argument("--screens", action="store_true",
                   help="also photograph the compare report into --out")
    harness.add_out(p, help="a folder")
    a = p.parse_args()
    result = run(a.references, a.train, a.epochs, a.seed,
                 Path(a.out) if a.screens and a.out else None)
    harness.emit(result)
    if a.out:
        harness.write_results(a.out, "compare.json", result)


if __name__ == "__main__":
    main()
