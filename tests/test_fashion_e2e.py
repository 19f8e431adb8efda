"""End to end on a small slice of real Fashion-MNIST with a model trained here."""
import json

import pytest
import torch

from repinterp import RepresentativeInterpreter
from repinterp.app.stats import region_stats
from repinterp.cli import main
from repinterp.demo.data import find_fashion_mnist, load_fashion_mnist
from repinterp.demo.models import FashionVGG, evaluate_accuracy, train_classifier

pytestmark = pytest.mark.skipif(find_fashion_mnist() is None,
                                reason="Fashion-MNIST not installed (make test installs it)")


@pytest.fixture(scope="module")
def trained():
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    torch.manual_seed(0)
    model = FashionVGG(width=8)
    train_classifier(model, x[:6000], y[:6000], epochs=2, seed=0, progress=False)
    return model, x[6000:8000], xt[:2000], evaluate_accuracy(model, xt[:2000], yt[:2000])


def test_regions_are_pure_on_held_out_images(trained):
    model, refs, test, acc = trained
    assert acc > 0.75
    it = RepresentativeInterpreter(model, "features", num_boundaries=30, progress=False)
    summary = it.fit(refs).summarize(coverage=0.8, max_regions=3)
    assert len(summary.classes) >= 9
    feats = it.features(test)
    preds = it.predict_features(feats)
    stats = [region_stats(r, feats, preds) for r in summary.regions]
    inside = sum(s.inside for s in stats)
    agree = sum(s.inside * s.purity for s in stats if s.inside)
    assert inside > 1000
    assert agree / inside >= 0.9
    # the reference purity is what delta allows
    for ri in summary.regions:
        others = int((it.predictions_[ri.members] != ri.predicted_class).sum())
        assert others <= ri.delta
        assert ri.purity == pytest.approx(1 - others / ri.size, abs=1e-12)


def test_cli_explain_writes_report(trained, tmp_path):
    model, *_ = trained
    ckpt_model = FashionVGG()
    x, y = load_fashion_mnist("train")
    train_classifier(ckpt_model, x[:1500], y[:1500], epochs=1, seed=0, progress=False)
    torch.save(ckpt_model.state_dict(), tmp_path / "m.pt")
    out = tmp_path / "out"
    root = find_fashion_mnist()
    heldout = next(root.glob("t10k-images*"))
    code = main(["explain", "--model", str(tmp_path / "m.pt"), "--layer", "features",
                 "--data", str(root), "--heldout", str(heldout), "--seed-index", "3",
                 "--references", "800", "--out", str(out), "--quiet"])
    assert code == 0
    data = json.loads((out / "summary.json").read_text())
    region = data["classes"][0]["regions"][0]
    assert region["seed_index"] == 3 and region["size"] >= 1
    assert region["heldout_inside"] > 0 and region["heldout_purity"] > 0.5
    assert data["meta"]["references"] == 800
    html = (out / "report.html").read_text()
    assert "Region 1" in html and "data:image/webp;base64," in html


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_the_shipped_demo_weights_score_what_their_record_says(arch, tmp_path, monkeypatch):
    """The demo's weights ship with the package (no 4-minute training on a fresh
    machine): with an empty cache they are what loads, and they score on the test set
    what their JSON says they scored when the project trained them."""
    from repinterp.demo.models import load_demo_model
    monkeypatch.setenv("REPINTERP_CACHE", str(tmp_path))
    model, meta = load_demo_model(arch, progress=False)
    assert meta["weights"] == "shipped with repinterp" and meta["epochs"] == 3
    xt, yt = load_fashion_mnist("test")
    assert evaluate_accuracy(model, xt, yt) == pytest.approx(meta["test_accuracy"],
                                                             abs=2e-4)
    assert not (tmp_path / "models").exists()                 # nothing trained or cached
