import math

import numpy as np
import pytest
import torch
from protocol import cam_weights, evaluate_seeds, reused_cam
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from conftest import tiny_cnn, tiny_images
from repinterp import RepresentativeInterpreter
from repinterp.core.metrics import average_drop_increase, keep_top, paired_ci


def test_keep_top_keeps_exactly_the_top_share():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 10, 10, generator=g)
    heat = torch.rand(4, 10, 10, generator=g)
    out = keep_top(x, heat, keep=0.2, baseline=-7.0)
    for i in range(4):
        kept = (out[i] != -7.0).all(0)
        assert int(kept.sum()) == 20
        assert heat[i][kept].min() > heat[i][~kept].max()
        assert torch.equal(out[i][:, kept], x[i][:, kept])
    assert int((keep_top(x[:1], heat[:1], keep=0.15)[0, 0] != 0).sum()) == math.ceil(15)


def test_drop_and_increase_match_pytorch_grad_cam():
    model = tiny_cnn(1, dtype=torch.float32).eval()
    x = tiny_images(1, 40, torch.float32)
    heat = torch.rand(40, 8, 8, generator=torch.Generator().manual_seed(2))
    masked = keep_top(x, heat)
    mask = (masked != 0).all(1).float().numpy()           # input * mask == masked
    cls = 1
    drop, inc = average_drop_increase(model, x, masked, cls)
    targets = [ClassifierOutputSoftmaxTarget(cls)] * len(x)
    their_drop = DropInConfidence()(x, mask, targets, model).reshape(-1)
    with torch.no_grad():
        y = model(x).softmax(1)[:, cls].numpy()
    np.testing.assert_allclose(drop.numpy(), their_drop / y, atol=1e-5)
    their_inc = IncreaseInConfidence()(x, mask, targets, model)
    np.testing.assert_array_equal(inc.numpy(), their_inc.reshape(-1))
    assert 0 < inc.sum() < len(x) and (drop > 0).any()   # both outcomes occur here


def test_grad_cam_weights_are_mean_gradients():
    model = tiny_cnn(0, dtype=torch.float32).train()
    x = tiny_images(0, 3, torch.float32)[0]
    layer = model[1]
    w = cam_weights("Grad-CAM", model, layer, x, 2)
    a = model[:2](x[None]).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model[2:](a)[0, 2], a)
    torch.testing.assert_close(w, g[0].mean((1, 2)), rtol=1e-5, atol=1e-7)
    # pytorch-grad-cam set eval and registered hooks: both undone
    assert model.training and all(not m._forward_hooks for m in model.modules())
    cam = reused_cam(w, a.detach(), (8, 8))
    assert cam.shape == (1, 8, 8) and (cam >= 0).all()


def test_paired_ci():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([0.0, 1.0, 2.0, 5.0])
    mean, lo, hi = paired_ci(a, b)
    assert mean == 1.0 and lo == 1.0 and hi == 1.0


def test_drop_and_increase_on_known_probabilities():
    """Two classes, logits (x, 0): Y_0 = sigmoid(x). Image 0: Y 3/4 -> 1/2 (drop 1/3);
    image 1: 1/2 -> 3/4 (increase); image 2: unchanged (neither)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0], [0.0]]))
        model[1].bias.zero_()
    log3 = math.log(3.0)
    x = torch.tensor([[log3], [0.0], [1.0]], dtype=torch.float64).view(3, 1, 1, 1)
    masked = torch.tensor([[0.0], [log3], [1.0]], dtype=torch.float64).view(3, 1, 1, 1)
    drop, inc = average_drop_increase(model, x, masked, 0)
    torch.testing.assert_close(drop, torch.tensor([1 / 3, 0.0, 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    assert inc.tolist() == [0.0, 1.0, 0.0]


def test_protocol_scores_are_the_metric_on_the_retrieved_images():
    """One seed, k = 5: the RI row is the mean drop of the region heat map over the five
    nearest unseen images of the region, and the Grad-CAM row the same for the seed's
    weights reused on the five Euclidean neighbours."""
    model = tiny_cnn(0, dtype=torch.float32)
    refs, unseen = tiny_images(0, 200, torch.float32), tiny_images(5, 100, torch.float32)
    it = RepresentativeInterpreter(model, "2", num_boundaries=10, progress=False).fit(refs)
    res = evaluate_seeds(it, refs, unseen, [3], ks=(5,), heatmaps=("margin",),
                         cams=("Grad-CAM",), extra_rows=False, progress=False)
    region = it.explain(3)
    idx, _ = it.rank(region, unseen)
    idx = idx[:5]
    assert len(idx) == 5
    x = unseen[idx]
    drop, inc = average_drop_increase(model, x, keep_top(x, it.heatmap(region, x)),
                                      region.predicted_class)
    assert res.ad["RI (margin)"][5][0] == pytest.approx(float(drop.mean()), abs=1e-6)
    assert res.ai["RI (margin)"][5][0] == pytest.approx(float(inc.mean()), abs=1e-12)
    feats = it.network_.features(unseen)
    eu = torch.cdist(it.features_[3:4], feats)[0].topk(5, largest=False).indices
    w = cam_weights("Grad-CAM", model, model[1], refs[3], region.predicted_class)
    xe = unseen[eu]
    heat = reused_cam(w, it.network_.unflatten(feats[eu]), (8, 8))
    drop, _ = average_drop_increase(model, xe, keep_top(xe, heat), region.predicted_class)
    assert res.ad["Grad-CAM (reused)"][5][0] == pytest.approx(float(drop.mean()), abs=1e-6)
