"""The README's own-model example, run verbatim on 224x224 JPEGs and a ResNet-18 with a
classifier centred on them (random weights: nothing is downloaded)."""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision_matrix import diversify

from repinterp.app.loading import load_images
from repinterp.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"<!-- own-model-example.*?-->\n```bash\n(.*?)```", text, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("repinterp ")]


@pytest.mark.slow
def test_readme_own_model_example_runs_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for i in range(18):
        folder = tmp_path / "my_images" / ("cats", "dogs", "birds")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (1, 1, 3)) * np.ones((224, 224, 3))
        img = np.clip(base + rng.normal(0, 40, (224, 224, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"photo {i:02d}.jpg", quality=90)
    Image.open(tmp_path / "my_images/dogs/photo 04.jpg").save(tmp_path / "query.jpg")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    diversify(model, load_images(tmp_path / "my_images", channels=3, size=(224, 224)).images)
    torch.save(model.state_dict(), tmp_path / "model.pt")

    commands = readme_commands()
    assert [c[0] for c in commands] == ["layers", "summarize", "explain", "explain",
                                        "summarize"]
    outs = []
    for argv in commands:
        code = main(argv + ["--quiet"] if argv[0] != "layers" else argv)
        out, err = capsys.readouterr()
        assert code == 0, (argv, err)
        outs.append(out)
    report = (tmp_path / "out/resnet/report.html").read_text()
    assert any(name in report for name in ("cats", "dogs", "birds"))
    assert "photo 04.jpg" in report and "data:image/jpeg;base64," in report
    # thumbnails are embedded small: 128 px JPEGs
    sizes = [len(m) * 3 // 4 for m in re.findall(r"data:image/jpeg;base64,([^\"]+)", report)]
    assert sizes and max(sizes) < 12_000
    assert (tmp_path / "out/resnet/summary.pt").is_file()
    assert (tmp_path / "out/query/report.html").is_file()
    assert "falls in" in outs[3]
    assert re.search(r"\(predicted (cats|dogs|birds)\)", outs[3])     # the folders' names
    # separate logics at 224x224: every region carries its logic, the folders' labels
    import json
    debug = json.loads((tmp_path / "out/debug/summary.json").read_text())
    regions = [r for c in debug["classes"] for r in c["regions"]]
    assert regions and all(r["logic"] is not None and r["labelled"] == r["size"]
                           for r in regions)
    assert (tmp_path / "out/debug/members.parquet").is_file()
