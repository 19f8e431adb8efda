"""Screenshots of the reports a user sees (issue 20), made as a user makes them: the demo
report, and the README's own-model commands on a folder of 224x224 photos (Fashion-MNIST
objects pasted on real photographs, :mod:`repinterp.demo.photos`; ImageFolder layout,
folder names = class names) with the project's trained photo ResNet-18 (trained at 160
px, fully convolutional: run here at 224) — a summary, an explanation of one image and
where a new image falls in the saved summary. Headless chromium takes the pictures.

    python -m benchmarks.report_screens --out docs [--images 150]
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks import harness
from repinterp.cli import main as cli
from repinterp.demo.photos import CLASS_NAMES, load_photo_model, photo_set


def photo_folder(root: Path, n: int, size: int = 224, split: str = "test") -> list[Path]:
    """``n`` photos of ``split`` as JPEGs in class folders under ``root``."""
    ds = photo_set(split, n, size=size)
    files = []
    for i in range(len(ds)):
        folder = root / CLASS_NAMES[int(ds.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        rgb = (ds.raw(i).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = folder / f"{split}-photo-{i:04d}{'-marked' if ds.marked[i] else ''}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        files.append(path)
    return files


def screenshot(html: Path, png: Path, height: int = 1600) -> None:
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--window-size=1280,{height}",
                    f"--screenshot={png}", html.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    if not png.is_file():
        sys.exit(f"chromium wrote no {png}")


def run(argv: list[str]) -> None:
    print("repinterp " + " ".join(argv), flush=True)
    if cli(argv + ["--quiet"]) != 0:
        sys.exit(f"failed: repinterp {' '.join(argv)}")


def main() -> None:
    p = harness.parser(__doc__)
    harness.add_out(p, "docs", help="the folder of the screenshots")
    p.add_argument("--images", type=int, default=150)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="repinterp-screens-"))
    model, _ = load_photo_model(progress=False)
    torch.save(model.state_dict(), work / "model.pt")
    photo_folder(work / "my_images", a.images)
    photo_folder(work / "heldout", 60, split="train")
    query = photo_folder(work / "queries", 12, split="train")
    # the model's class order (not the folders' sorted order, which a model trained
    # with torchvision's ImageFolder would have)
    (work / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    model_args = ["--arch", "resnet18", "--weights", str(work / "model.pt"),
                  "--num-classes", "3"]
    names = ["--class-names", str(work / "classes.txt")]
    data = ["--data", str(work / "my_images"), "--size", "224"]
    run(["demo", "--out", str(work / "demo")])
    run(["summarize", *model_args, "--layer", "layer4.0", *data, *names, "--heldout",
         str(work / "heldout"), "--out", str(work / "resnet")])
    run(["explain", *model_args, "--layer", "layer4.0", *data, *names, "--image",
         str(query[0]), "--out", str(work / "query")])
    run(["explain", *model_args, *data, "--summary", str(work / "resnet"), "--image",
         str(query[1]), "--out", str(work / "located")])
    for name, folder, height in (("demo", "demo", 2200), ("summary-224", "resnet", 2000),
                                 ("explain-224", "query", 1300),
                                 ("located-224", "located", 1300)):
        screenshot(work / folder / "report.html", out / f"report-{name}.png", height)
        print(f"{out / f'report-{name}.png'}")
    print(f"reports under {work}")


if __name__ == "__main__":
    main()
