"""Issue 19: the region heat map as a Quantus ``explain_func``, run through Quantus
itself on a tiny seeded network."""
import copy
import warnings

import numpy as np
import pytest
import torch

from repinterp.metrics import QuantusExplainer

quantus = pytest.importorskip("quantus")


def test_explainer_maps_are_the_interpreters_and_refit_on_new_weights(net, images):
    explain = QuantusExplainer(images[:200], "2", num_boundaries=20)
    x = images[200:204]
    with torch.no_grad():
        y = net(x).argmax(1).numpy()
    a = explain(net, x.numpy(), y)
    assert a.shape == (4, 1, 8, 8) and a.dtype == np.float32
    interp = explain.interpreter(net)
    for i in range(4):
        want = interp.heatmap(interp.explain(x[i]), x[i:i + 1])[0]
        np.testing.assert_array_equal(a[i, 0], want.float().numpy())
    assert explain.interpreter(net) is interp                  # cached for this model
    changed = copy.deepcopy(net)
    with torch.no_grad():
        changed[0].weight.mul_(-1)
    assert explain.interpreter(changed) is not interp          # refitted
    # another target: the region against that class alone
    other = (y + 1) % 3
    b = explain(net, x.numpy(), other)
    want = interp.heatmap(interp.explain(x[0], target=int(other[0])), x[:1])[0]
    np.testing.assert_array_equal(b[0, 0], want.float().numpy())


def test_quantus_runs_its_metrics_on_the_region_heat_map(net, images):
    model = copy.deepcopy(net).float()                 # Quantus hands float32 arrays
    explain = QuantusExplainer(images[:200].float(), "2", num_boundaries=20)
    x = images[200:210].float()
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    a = explain(model, x.numpy(), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparse = quantus.Sparseness(disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, device="cpu")
        sens = quantus.MaxSensitivity(nr_samples=3, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y, a_batch=a,
            explain_func=explain, device="cpu")
    assert len(sparse) == 10 and all(0 <= s <= 1 for s in sparse)
    assert len(sens) == 10 and all(np.isfinite(sens))


def test_a_located_explainer_draws_the_summary_region_an_input_falls_in(net, images):
    explain = QuantusExplainer(images[:200], "2", located=True, num_boundaries=20)
    x = images[200:230]
    with torch.no_grad():
        y = net(x).argmax(1).numpy()
    a = explain(net, x.numpy(), y)
    interp = explain.interpreter(net)
    summary = interp.summarize()
    feats = interp.features(x)
    where = summary.locate_features(feats, interp.predict_features(feats)).tolist()
    assert sum(k >= 0 for k in where) > 0
    assert explain.located_ == sum(k >= 0 for k in where)
    for i, k in enumerate(where):
        region = summary.regions[k] if k >= 0 else interp.explain(x[i])
        want = interp.heatmap(region, x[i:i + 1])[0]
        np.testing.assert_array_equal(a[i, 0], want.float().numpy())
    # a target other than the prediction: that input's own region against the target
    other = (y + 1) % 3
    b = explain(net, x[:1].numpy(), other[:1])
    want = interp.heatmap(interp.explain(x[0], target=int(other[0])), x[:1])[0]
    np.testing.assert_array_equal(b[0, 0], want.float().numpy())
