import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from helpers import TESTS, same_region, split_store
from nets import tiny_cnn, tiny_images
from torch import nn

from repinterp import NotFittedError, Region, RepresentativeInterpreter, Summary, UserError
from repinterp.core.boundaries import Boundaries
from repinterp.core.split import split_model


@pytest.fixture(scope="module", params=["bisection", "shared"])
def fitted(request, net, images):
    it = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling=request.param,
                                   seed=3, progress=False)
    return it.fit(images)


def test_members_contains_rank_agree_with_boundaries(fitted, images):
    for seed in (0, 5, 17):
        region = fitted.explain(seed)
        z = fitted.features_
        inside = ((z @ region.weights.T + region.biases) >= 0).all(1)
        assert inside[seed]
        assert set(region.members.tolist()) == set(inside.nonzero()[:, 0].tolist())
        assert torch.equal(fitted.contains(region, images), inside)
        idx, dist = fitted.rank(region, images)
        assert torch.equal(idx, region.members)
        # semantic distance straight from the formula, in float64
        ref = torch.stack([(region.weights @ z[seed] - region.weights @ z[i]).abs().sum()
                           for i in idx.tolist()])
        torch.testing.assert_close(dist, ref)
        assert (dist[1:] >= dist[:-1]).all() and dist[0] < 1e-12  # recomputed features
        assert region.members[0] == seed
        assert region.predicted_class == int(fitted.predictions_[seed])
        others_inside = int((fitted.predictions_[region.members]
                             != region.predicted_class).sum())
        assert others_inside <= region.delta
        assert region.purity == pytest.approx(1 - others_inside / region.size)


def test_image_seed_gives_the_index_seed_region(net, images):
    """With shared boundaries nothing random depends on how the seed is given: the
    region of image 4 is the region of reference 4 (and, since issue 19, the image is
    recognised as reference 4)."""
    it = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling="shared",
                                   progress=False).fit(images)
    by_image, by_index = it.explain(images[4]), it.explain(4)
    assert by_image.seed_index == by_index.seed_index == 4
    assert torch.equal(by_image.members, by_index.members)
    torch.testing.assert_close(by_image.weights, by_index.weights, rtol=0, atol=1e-12)
    assert torch.equal(by_image.pairs, by_index.pairs)
    assert it.contains(by_image, images[4:5])[0]


def test_same_seed_same_result(net, images):
    a = RepresentativeInterpreter(net, "2", num_boundaries=15, seed=7, progress=False).fit(images)
    b = RepresentativeInterpreter(net, "2", num_boundaries=15, seed=7, progress=False).fit(images)
    ra, rb = a.explain(11), b.explain(11)
    assert torch.equal(ra.weights, rb.weights) and torch.equal(ra.members, rb.members)


def test_summary_covers_classes_and_orders_regions(fitted):
    s = fitted.summarize(coverage=0.8, max_regions=4)
    preds = fitted.predictions_
    assert [c.cls for c in s] == sorted(set(preds.tolist()))
    for c in s:
        sizes = [r.size for r in c.regions]
        assert sizes == sorted(sizes, reverse=True)
        covered = torch.zeros(len(preds), dtype=torch.bool)
        for r in c.regions:
            covered[r.members] = True
            assert r.predicted_class == c.cls
        assert c.covered == int((covered & (preds == c.cls)).sum())
        assert c.coverage >= 0.8 or len(c.regions) == 4


def test_errors(net, images):
    it = RepresentativeInterpreter(net, "2", progress=False)
    it.fit(images)
    with pytest.raises(UserError, match="out of range"):
        it.explain(10_000)
    with pytest.raises(UserError, match="integer"):
        it.explain(1.5)
    with pytest.raises(UserError, match="Tensor"):
        RepresentativeInterpreter(net, "2", progress=False).fit([1, 2, 3])
    with pytest.raises(UserError, match="sampling"):  # parameters are checked in fit
        RepresentativeInterpreter(net, "2", sampling="nope").fit(images)
    with pytest.raises(UserError, match="NaN"):
        it.features(images[:2] * float("nan"))
    with pytest.raises(UserError, match="coverage"):
        it.summarize(coverage=0)


def test_one_class_only_is_reported(net, images):
    it = RepresentativeInterpreter(net, "2", progress=False).fit(images)
    keep = it.predictions_ == it.predictions_[0]
    it.fit(images[keep])
    with pytest.raises(UserError, match="every reference image is predicted as class"):
        it.explain(0)


@pytest.mark.parametrize("sampling", ["bisection", "shared"])
def test_linear_prefix_fast_path_equals_direct_product(net, images, sampling):
    fast = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling=sampling,
                                     seed=1, progress=False).fit(images)
    slow = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling=sampling,
                                     seed=1, progress=False, use_prefix=False).fit(images)
    # the fast path keeps the projections by the head's first linear layer (16 outputs)
    # beside the features, and counts them; the slow path keeps the features alone
    z = fast.features_
    assert torch.equal(z, slow.features_)
    assert slow.nbytes_ == z.numel() * z.element_size()
    assert fast.nbytes_ - slow.nbytes_ == len(images) * 16 * z.element_size()
    for seed in range(0, 60, 7):
        a, c = fast.explain(seed), slow.explain(seed)
        assert torch.equal(a.members, c.members) and a.delta == c.delta
        torch.testing.assert_close(a.weights, c.weights, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(a.member_distances, c.member_distances, rtol=1e-9,
                                   atol=1e-9)


def test_half_precision_store(net, images):
    full = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False,
                                     use_prefix=False).fit(images)
    half = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False,
                                     use_prefix=False, feature_dtype=torch.float16).fit(images)
    assert half.features_.dtype == torch.float16
    assert half.nbytes_ * 4 == full.nbytes_                    # float64 -> float16
    ra, rb = full.explain(3), half.explain(3)
    overlap = len(set(ra.members.tolist()) & set(rb.members.tolist()))
    assert overlap >= 0.9 * max(ra.size, rb.size)


def test_locate_puts_images_in_their_largest_containing_region(fitted):
    s = fitted.summarize(coverage=0.9, max_regions=3)
    feats = fitted.features_
    where = s.locate_features(feats, fitted.predictions_)
    regions = s.regions
    for i in range(len(feats)):
        c = int(fitted.predictions_[i])
        own = [k for k, r in enumerate(regions) if r.predicted_class == c
               and bool(r.contains_features(feats[i:i + 1])[0])]
        assert int(where[i]) == (min(own) if own else -1)


def conv_runs(it, images) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The weight and the output of every convolution run while ``it`` computes features
    (a global forward hook: the interpreter runs private copies of the user's modules)."""
    seen = []

    def hook(module, args, out):
        if isinstance(module, nn.Conv2d):
            seen.append((module.weight, out))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        it.features(images)
    finally:
        handle.remove()
    return seen


def test_channels_last_copy_gives_the_same_features(net, images):
    fast = RepresentativeInterpreter(net, "2", progress=False).fit(images)
    plain = RepresentativeInterpreter(net, "2", progress=False, channels_last=False).fit(images)
    torch.testing.assert_close(fast.features_, plain.features_, rtol=1e-12, atol=1e-12)
    # the copy runs channels-last only when asked to (seen on 3 input channels: with one,
    # both layouts have the same strides)
    torch.manual_seed(0)
    rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(64, 3)).double()
    x = torch.randn(40, 3, 8, 8, dtype=torch.float64)
    cl = torch.channels_last
    for flag in (True, False):
        it = RepresentativeInterpreter(rgb, "2", progress=False, channels_last=flag).fit(x)
        ran = conv_runs(it, x[:4])
        assert ran
        for weight, out in ran:
            assert weight.is_contiguous(memory_format=cl) is flag
            assert out.is_contiguous(memory_format=cl) is flag
            assert out.is_contiguous() is not flag
        torch.testing.assert_close(it.features(x), rgb[:3](x).flatten(1), rtol=1e-12,
                                   atol=1e-12)
    assert net[0].weight.is_contiguous()  # the user's parameters keep their layout
    assert rgb[0].weight.is_contiguous() and not rgb[0].weight.is_contiguous(memory_format=cl)


# --- regressions: one test per bug of issue 8 -------------------------------------------
def _agreement(interp, model, x):
    with torch.no_grad():
        was = model.training
        model.eval()
        try:
            return float((interp.predictions_ == model(x).argmax(1)).double().mean())
        finally:
            model.train(was)


def test_bug1_fit_uses_the_current_weights(images):
    """Was 44% agreement: the feature copy was made at construction."""
    model = tiny_cnn(0)
    it = RepresentativeInterpreter(model, "2", progress=False)
    model.load_state_dict(tiny_cnn(5).state_dict())
    it.fit(images)
    assert _agreement(it, model, images) == 1.0


def test_bug1_a_weight_change_after_fit_warns(images):
    model = tiny_cnn(0)
    it = RepresentativeInterpreter(model, "2", num_boundaries=5, progress=False).fit(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        it.explain(0)                                   # unchanged: no warning
    with torch.no_grad():
        model[4].weight.mul_(2)
    with pytest.warns(UserWarning, match="changed since fit") as caught:
        it.explain(0)
    assert caught[0].filename == __file__               # points at the caller


def test_bug2_device_copies_run_in_eval_mode(images):
    """Was 68% agreement: copies for another device kept the training flags."""
    base = tiny_cnn(0)
    model = nn.Sequential(*base[:5], nn.Dropout(0.5), *base[5:]).train()
    it = RepresentativeInterpreter(model, "2", device="cpu:0", progress=False).fit(images)
    assert _agreement(it, copy.deepcopy(model), images) == 1.0
    assert model.training                               # the user's flag is kept
    # every module the interpreter runs (its private copies: a global hook sees them)
    # runs in eval mode, the head's dropout included
    ran = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: ran.append((type(m), m.training)))
    try:
        it.predict(images[:10])
    finally:
        handle.remove()
    assert (nn.Dropout, False) in ran and not any(training for _, training in ran)


def test_bug3_num_boundaries_is_honoured_with_shared_sampling(net, images):
    it = RepresentativeInterpreter(net, "2", num_boundaries=30, sampling="shared",
                                   progress=False).fit(images)
    bank = it.bank_
    for seed in (0, 9, 21):
        region = it.explain(seed, num_boundaries=3)
        # the bank is kept in the working space of the head's first linear layer
        # (``net[4]``); in feature space a boundary ``g`` is ``g A``
        lifted = bank.weights[:3] @ net[4].weight.detach()
        for w in region.weights:   # every selected boundary is one of the first three
            assert min(float((w - s * v).abs().max()) for v in lifted for s in (1, -1)) < 1e-12
    with pytest.raises(UserError, match="exceeds the 30 shared"):
        it.explain(0, num_boundaries=31)


@pytest.mark.parametrize("sampling", ["bisection", "shared"])
def test_bug4_flipped_boundaries_swap_their_class_pair(net, images, sampling):
    """Was 12 of 20 shared-mode rows holding grad(G_c2 - G_c1) under the label (c1, c2)."""
    it = RepresentativeInterpreter(net, "2", num_boundaries=20, sampling=sampling,
                                   progress=False).fit(images)
    # the full head: the user's (the interpreter's private copy is a copy of it)
    head, shape = split_model(net, "2").head, it.feature_shape_
    rows = 0
    for seed in range(0, 60, 6):
        region = it.explain(seed)
        for w, (c1, c2), p in zip(region.weights, region.pairs.tolist(),
                                  region.boundary_points, strict=True):
            z = p.clone().requires_grad_(True)
            out = head(z.view(1, *shape))[0]
            (g,) = torch.autograd.grad(out[c1] - out[c2], z)
            torch.testing.assert_close(w, g, rtol=0, atol=1e-10)
            rows += 1
    assert rows > 10


def test_bug5_seed_on_a_boundary_stays_in_its_region():
    """Was 52 of 60 seeds outside their own region: boundaries through the seed were
    oriented by a feature-space product and judged by the prefix-space product."""
    net32, x = tiny_cnn(0, torch.float32), tiny_images(0, dtype=torch.float32)
    it = RepresentativeInterpreter(net32, "2", num_boundaries=20, sampling="shared",
                                   progress=False).fit(x)
    from repinterp.core.engine import dense_candidates, make_region
    bank = it.bank_
    # the store the interpreter keeps, made as fit makes it (the same features)
    _, store = split_store(net32, "2", x)
    assert torch.equal(store.z, it.features_) and store.projected is not None
    p = store.projected
    for s in range(60):
        through = -(bank.weights @ p[s])        # every boundary through the seed
        values = store.side_values(bank.weights, through)
        w, b = store.lift(bank.weights, through)
        cls = int(it.predictions_[s])
        candidates = dense_candidates(Boundaries(w, b, bank.points, bank.pairs), values,
                                      values[s])
        region = make_region(candidates, it.predictions_, cls, it.predictions_ == cls,
                             seed_index=s, delta=None, min_purity=it.min_purity_,
                             feature_shape=it.feature_shape_)
        assert s in set(region.members.tolist())
        assert (region.seed_values >= 0).all()


def test_bug6_not_fitted_is_a_value_and_attribute_error(net):
    it = RepresentativeInterpreter(net, "2")
    for call in (lambda: it.explain(0), lambda: it.summarize(),
                 lambda: it.heatmap(None, None), lambda: it.features_):
        with pytest.raises(NotFittedError, match="fit"):
            call()
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    assert not hasattr(it, "features_")


def test_bug7_integer_like_indices(fitted):
    expected = fitted.explain(7).members
    for seed in (np.int64(7), np.int32(7), torch.tensor(7), torch.tensor([7])[0]):
        assert torch.equal(fitted.explain(seed).members, expected)


def test_bug8_infeasible_delta_warns_at_the_caller(net, images):
    it = RepresentativeInterpreter(net, "2", num_boundaries=3, progress=False).fit(images)
    region = it.explain(0)
    if region.min_delta == 0:
        pytest.skip("feasible with delta 0 here")
    with pytest.warns(UserWarning, match="infeasible") as caught:
        it.explain(0, delta=region.min_delta - 1)
    assert caught[0].filename == __file__


# --- plain values ------------------------------------------------------------------
def test_region_and_summary_are_small_plain_values(net, images, tmp_path):
    it = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False).fit(images)
    summary = it.summarize(coverage=0.8, max_regions=2)
    blob = pickle.dumps(summary)
    region_bytes = sum(r.weights.numel() * 2 * 8 + r.members.numel() * 16
                       for r in summary.regions)
    assert len(blob) < region_bytes + 20_000 < it.nbytes_
    assert "RepresentativeInterpreter" not in str(blob)
    path = tmp_path / "s.pt"
    torch.save(summary.to_dict(), path)
    back = Summary.from_dict(torch.load(path, weights_only=True))
    for a, b in zip(summary.regions, back.regions, strict=True):
        assert isinstance(b, Region) and torch.equal(a.weights, b.weights)
        assert torch.equal(a.members, b.members) and a.feature_shape == b.feature_shape
    feats = it.features_
    assert torch.equal(summary.locate_features(feats, it.predictions_),
                        back.locate_features(feats, it.predictions_))


def test_bug8_references_limit_reads_only_what_it_needs(tmp_path):
    """Was: every file of the folder was read before keeping N (a corrupt file not among
    the N drawn failed --strict)."""
    from PIL import Image

    from repinterp.app.loading import load_images
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"a{i}.png")
    (tmp_path / "z_broken.png").write_bytes(b"not an image")
    outcomes = set()
    for seed in range(10):                    # the N are drawn at random (seeded)
        try:
            got = load_images(tmp_path, limit=3, strict=True, seed=seed)
        except UserError as exc:              # the corrupt file was drawn
            assert "z_broken.png" in str(exc)
            outcomes.add("drawn")
            continue
        assert len(got.names) == 3 and got.names == sorted(got.names)
        assert "z_broken.png" not in got.names
        outcomes.add("not drawn, not read")
    assert outcomes == {"drawn", "not drawn, not read"}
    with pytest.raises(UserError, match="z_broken.png"):
        load_images(tmp_path, strict=True)


def test_bug8_demo_model_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    """Was: torch.manual_seed(seed) in the demo model code reset the caller's RNG."""
    import json

    from repinterp.demo.models import FashionVGG, load_demo_model
    monkeypatch.setenv("REPINTERP_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    torch.save(FashionVGG().state_dict(), tmp_path / "models" / "vgg-e3-s0.pt")
    (tmp_path / "models" / "vgg-e3-s0.json").write_text(json.dumps({"arch": "vgg"}))
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    load_demo_model()
    assert torch.equal(torch.rand(3), expected)


#: run in a fresh Python in the tests' folder (so that ``nets`` is importable)
_PRECISION_PROBE = """
import torch
from nets import tiny_cnn, tiny_images
from repinterp import RepresentativeInterpreter
from repinterp.core.precision import exact_float32

def readings():
    out = {{}}
    b = torch.backends
    for name, f in [("get", torch.get_float32_matmul_precision),
                    ("mm_allow", lambda: b.cuda.matmul.allow_tf32),
                    ("cudnn_allow", lambda: b.cudnn.allow_tf32),
                    ("root", lambda: b.fp32_precision),
                    ("mm", lambda: b.cuda.matmul.fp32_precision),
                    ("conv", lambda: b.cudnn.conv.fp32_precision),
                    ("rnn", lambda: b.cudnn.rnn.fp32_precision)]:
        try:
            out[name] = f()
        except RuntimeError:
            out[name] = "raises"
    return out

{setup}
before = readings()
net = tiny_cnn(0)
seen = []
net[4].register_forward_pre_hook(lambda m, i: seen.append(
    (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)))
it = RepresentativeInterpreter(net, "2", num_boundaries=5, progress=False)
it.fit(tiny_images(0, 60)).explain(0)
try:
    with exact_float32():
        raise KeyError("boom")
except KeyError:
    pass
assert readings() == before, (before, readings())
assert seen and set(seen) == {{("ieee", "ieee")}}, set(seen)
print("ok")
"""


@pytest.mark.parametrize("setup", [
    "",
    'torch.set_float32_matmul_precision("medium")',
    "torch.backends.cudnn.allow_tf32 = False; torch.backends.cuda.matmul.allow_tf32 = True",
    'torch.backends.fp32_precision = "tf32"',
    'torch.backends.cuda.matmul.fp32_precision = "tf32"',
    'torch.backends.cudnn.conv.fp32_precision = "ieee"',
])
def test_tf32_is_off_inside_and_the_users_precision_comes_back(setup):
    """repinterp computes in full float32 (TF32 would make a GPU head's margins noisy at
    1e-3 of the logits) and leaves the process-wide settings exactly as the user set
    them, under PyTorch's legacy flags and its fp32_precision API alike, also after an
    error (a fresh process each: the settings are global)."""
    import subprocess
    import sys
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("PyTorch < 2.9 has no fp32_precision API")
    code = _PRECISION_PROBE.format(setup=setup)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=TESTS)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_queries_do_not_change_the_fitted_shapes():
    """A fully convolutional network takes images of any size: heat maps of 16x16
    images after a fit on 8x8 ones leave the fitted shapes alone, and the next explain
    works (issue 18: it raised a reshape error)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 3)).double()
    images = tiny_images(0, 120)
    labels = (images.flatten(1) @ torch.randn(64, 3, dtype=torch.float64)).argmax(1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(100):                             # so that it predicts every class
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()
    it = RepresentativeInterpreter(model, "1", num_boundaries=8, progress=False).fit(images)
    shapes = it.input_size_, it.feature_shape_
    region = it.explain(0)
    big = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    assert it.heatmap(region, big).shape == (3, 16, 16)
    assert (it.input_size_, it.feature_shape_) == shapes == ((8, 8), (4, 8, 8))
    assert it.explain(1).feature_shape == (4, 8, 8)
    # the network the interpreter makes at fit: its first pass fixes both shapes
    network, _ = split_store(model, "1", images)
    shapes = network.input_shape, network.feature_shape
    assert network.heatmap(region, big).shape == (3, 16, 16)
    assert (network.input_shape, network.feature_shape) == shapes == ((1, 8, 8), (4, 8, 8))


def test_public_verbs_features_predict_locate(net, images):
    """What callers need, without reaching into fitted internals: features, predictions
    (equal to the model's own) and the region of a summary each image falls in."""
    it = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False).fit(images)
    with torch.no_grad():
        expected = net(images[:50])
    torch.testing.assert_close(it.predict(images[:50], logits=True), expected)
    assert torch.equal(it.predict(images[:50]), expected.argmax(1))
    assert torch.equal(it.features(images[:50]), it.features_[:50])
    assert it.features(images[:3], flat=False).shape == (3, *it.feature_shape_)
    summary = it.summarize(coverage=0.8, max_regions=3)
    where = it.locate(summary, images)
    for k, region in enumerate(summary.regions):     # every member of the region's class
        mine = region.members[it.predictions_[region.members] == region.predicted_class]
        inside = where[mine]                         # lies in this region or a larger one
        assert len(mine) and bool((inside >= 0).all()) and bool((inside <= k).all())


def test_short_reprs(net, images):
    """A region or a summary prints as one short line, not as its tensors."""
    it = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False).fit(images)
    region = it.explain(4)
    text = repr(region)
    assert text.startswith(f"Region(class {region.predicted_class}, {region.size} members")
    assert "seed 4" in text and "tensor" not in text and "\n" not in text
    summary = it.summarize(coverage=0.5, max_regions=2)
    assert repr(summary).startswith(f"Summary({len(summary.regions)} regions after '2'")
    assert "tensor" not in repr(summary) + repr(summary.classes[0])


def test_one_region_of_a_summary_counts_as_of_region(net, images):
    """The region a new image is located in, reported alone, has the coverage an
    explanation of that region has (its members of its class), never above 100%."""
    it = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False).fit(images)
    summary = it.summarize(coverage=0.9, max_regions=3)
    for k, region in enumerate(summary.regions):
        one = summary.one_region(k)
        ref = Summary.of_region(region, it.predictions_)
        assert one.classes[0].covered == ref.classes[0].covered
        assert one.classes[0].n_images == ref.classes[0].n_images
        assert one.classes[0].coverage <= 1 and one.regions == [region]
    with pytest.raises(UserError, match="out of range"):
        summary.one_region(len(summary.regions))


def test_notebook_views_are_self_contained_html(net, images):
    """A region and a summary render themselves in a notebook; show() adds the seed and
    the closest members with the region's heat map, images inline, nothing fetched."""
    import re

    from repinterp.app.notebook import show
    it = RepresentativeInterpreter(net, "2", num_boundaries=10, progress=False).fit(images)
    region = it.explain(2)
    facts = region._repr_html_()
    assert f"<td>{region.size}</td>" in facts and "<caption>Region</caption>" in facts
    summary = it.summarize(coverage=0.5, max_regions=2)
    table = summary._repr_html_()
    assert table.count("<tr>") == 1 + len(summary.classes)
    first = summary.regions[0]                      # the contract's count shown too
    shown = "no held-out reference inside" if first.holdout_purity is None else \
        f"{100 * first.holdout_purity:.1f}% of {first.holdout[0]}"
    assert f"<th style='text-align:left'>held-out purity</th><td>{shown}</td>" in \
        first._repr_html_()
    assert "held-out purity" not in facts               # an explanation has none
    view = show(region, images, it.heatmap, top=4)
    markup = view._repr_html_()
    assert markup.count("<img ") == min(4, region.size)          # the seed is rank 1
    assert all(src.startswith("data:image/") for src in re.findall(r"src='([^']*)'", markup))
    assert "http" not in markup and "<script" not in markup and str(view) == markup


def test_an_image_equal_to_a_reference_gets_its_region(net, images):
    """Issue 19: ``explain(refs[i])`` and ``explain(i)`` agree (the image *is* that
    reference), also through a float32 model whose batch of one differs from the fit's
    batches in the last bits; an image that is no reference keeps its own stream."""
    interp = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False)
    interp.fit(images)
    for i in (0, 7, 123):
        by_index, by_image = interp.explain(i), interp.explain(images[i])
        assert by_image.seed_index == i
        same_region(by_index, by_image)
    other = images[5] + 0.05 * torch.randn(images[5].shape, dtype=images.dtype,
                                           generator=torch.Generator().manual_seed(0))
    assert interp.explain(other).seed_index is None
    net32 = copy.deepcopy(net).float()
    x32 = images.float()
    f32 = RepresentativeInterpreter(net32, "2", num_boundaries=20, progress=False,
                                    batch_size=64).fit(x32)
    for i in (3, 200):
        same_region(f32.explain(i), f32.explain(x32[i]))


def test_explain_many_takes_a_batch_and_numpy(net, images):
    interp = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False)
    interp.fit(images[:200])
    batch = images[250:253]
    regions = interp.explain_many(batch)
    assert isinstance(regions, list) and len(regions) == 3
    for img, region in zip(batch, regions, strict=True):
        same_region(region, interp.explain(img))
        same_region(region, interp.explain(img.numpy()))
    from_numpy = interp.explain_many(batch.numpy())
    assert len(from_numpy) == 3
    for img, region in zip(batch.numpy(), from_numpy, strict=True):
        same_region(region, interp.explain(img))
    # a sequence of indices and images, in order
    mixed = interp.explain_many([7, batch[1]])
    same_region(mixed[0], interp.explain(7))
    same_region(mixed[1], regions[1])


def test_explain_takes_one_seed_and_names_explain_many_for_a_batch(net, images):
    interp = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False)
    interp.fit(images[:200])
    for batch in (images[250:253], images[250:253].numpy()):
        with pytest.raises(UserError, match="for a batch of 3 images call explain_many"):
            interp.explain(batch)
    assert isinstance(interp.explain(images[250]), Region)


def test_explain_against_one_target_class(net, images):
    """``target=t``: sampled towards class-t references only, and no class-t reference
    inside (delta 0); third classes may be inside. The seed's own class is the plain
    region."""
    interp = RepresentativeInterpreter(net, "2", num_boundaries=20, progress=False,
                                       delta=0, min_purity=None).fit(images)
    seed = 0
    c = int(interp.predictions_[seed])
    same_region(interp.explain(seed, target=c), interp.explain(seed))
    for t in {0, 1, 2} - {c}:
        region = interp.explain(seed, target=t)
        inside = interp.predictions_[region.members]
        assert not bool((inside == t).any())
        assert bool((region.pairs[:, 0] == c).all())
        # its boundaries sit between c and t: at each point the two top logits are c, t
        logits = interp.predict_features(region.boundary_points, logits=True)
        top2 = logits.topk(2, 1).indices.sort(1).values
        assert bool((top2 == torch.tensor(sorted((c, t)))).all(1).float().mean() > 0.5)
    with pytest.raises(UserError, match="target class 7"):
        interp.explain(seed, target=7)


class _InplaceHead(torch.nn.Module):
    """DenseNet's pattern: the head starts with ``F.relu(features, inplace=True)``."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        out = torch.nn.functional.relu(self.features(x), inplace=True)
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))


def test_an_inplace_op_on_the_heads_input_changes_nothing_stored(images):
    """The stored features keep their negative values (the head's in-place ReLU works on
    its own copy), and boundaries can be taken (no in-place op on a leaf)."""
    torch.manual_seed(0)
    model = _InplaceHead().double().eval()
    with torch.no_grad():
        model.fc.weight.mul_(20)
        model.fc.bias.sub_(model(images).mean(0))
    interp = RepresentativeInterpreter(model, "features", num_boundaries=10,
                                       progress=False).fit(images)
    fresh = interp.features(images, progress=False)
    assert bool((interp.features_ < 0).any())
    torch.testing.assert_close(interp.features_, fresh, rtol=0, atol=0)
    region = interp.explain(0)
    assert region.size >= 1


def test_summary_searches_every_class_at_once_with_the_regions_of_one_at_a_time(
        monkeypatch):
    """Issue 22: the summary's boundary searches of every class share their head passes
    (fewer, larger passes: a GPU's latency, not its work); each region is the one the
    class-by-class peel finds, seed by seed (float64: to the rounding of a batch)."""
    from repinterp.core.summary import peel
    net = tiny_cnn(4, classes=5)
    it = RepresentativeInterpreter(net, "2", num_boundaries=12, seed=1,
                                   progress=False).fit(tiny_images(4, 400))
    # a pass of the head (after its linear prefix) ends with its last linear layer, of
    # the private copy: a global hook sees it (16 hidden units -> 5 classes)
    passes = []

    def count(module, args, out):
        if isinstance(module, nn.Linear) and (module.in_features, module.out_features) \
                == (16, 5):
            passes.append(len(out))

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        together = it.summarize(coverage=0.9, max_regions=4, batch_seeds=True,
                                target_purity=None)
        n_together, rows_together = len(passes), sum(passes)
        passes.clear()
        alone = peel(it.predictions_, it.margins_, it.explain, 0.9, 4)
        n_alone = len(passes)
        passes.clear()
        default = it.summarize(coverage=0.9, max_regions=4,     # CPU: one seed at a time
                               target_purity=None)
        assert len(passes) == n_alone
    finally:
        hook.remove()
    assert len(together.classes) == 5 and len(together.regions) >= 9
    for a, b in zip(together.regions, [r for c in alone for r in c.regions], strict=True):
        assert torch.equal(a.members, b.members) and a.seed_index == b.seed_index
        torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=1e-10)
        torch.testing.assert_close(a.member_distances, b.member_distances)
    assert [(c.n_images, c.covered) for c in together] == [(c.n_images, c.covered)
                                                           for c in alone]
    # the same head rows, in less than half as many passes
    assert 2 * n_together < n_alone
    assert rows_together <= sum(passes) + len(together.regions)
    for a, b in zip(default.regions, [r for c in alone for r in c.regions], strict=True):
        assert torch.equal(a.members, b.members) and torch.equal(a.weights, b.weights)
    # searches cut into batches of at most 2 seeds' segment points: the same regions
    import repinterp.core.boundaries as module
    monkeypatch.setattr(module, "SEARCH_BYTES", 2 * 12 * it.features_.shape[1] * 8)
    cut = it.summarize(coverage=0.9, max_regions=4, batch_seeds=True, target_purity=None)
    for a, b in zip(together.regions, cut.regions, strict=True):
        assert torch.equal(a.members, b.members)
        torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=1e-10)
    # with the purity contract too: every level's seeds searched together, the regions
    # of one seed at a time
    monkeypatch.undo()
    both = [it.summarize(coverage=0.9, max_regions=4, batch_seeds=b) for b in (True, False)]
    assert len(both[0].regions) == len(both[1].regions) >= 5
    for a, b in zip(*(s.regions for s in both), strict=True):
        assert torch.equal(a.members, b.members) and a.holdout == b.holdout
