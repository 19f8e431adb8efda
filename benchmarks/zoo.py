"""A model zoo: 14 small classifiers the method was not designed on, for development and
held-out reporting, on Fashion-MNIST and on scikit-learn's digits (upscaled to 28x28).

The split is fixed here, once: :data:`DEV` (7 entries) and :data:`HELDOUT` (the other
7). Defaults (of the method, of a benchmark) are chosen on DEV only; HELDOUT is for
reporting, and no choice may be made by looking at its results. Each half holds a mix:
plain, BatchNorm and residual CNNs, max, average and strided-conv pooling, a smooth head
(GELU in DEV, SiLU in HELDOUT), digits models in both; the small ViT is held out.

Each entry names the layer to split at (a name from ``model.named_modules()``): the last
convolutional block, whose output goes into the fully connected head (for the residual
nets: the last residual stage). Every ReLU head is piecewise linear (Linear, ReLU,
pooling, Flatten, Dropout, BatchNorm in eval); the GELU and SiLU heads and the ViT's
(split after its first of two encoder blocks) are smooth, so their boundaries are tangent.

Data: images in [0, 1] (``[N, 1, 28, 28]``), Fashion-MNIST not normalised; digits'
8x8 images divided by 16 and upscaled bilinearly to 28x28, split 1200 / 597 by a
permutation seeded :data:`DIGITS_SPLIT_SEED` (the same for every model seed). Training:
seeded, Adam with a one-cycle learning rate, batch 128 (the demo's ``train_classifier``),
one thread (``--threads``, 2 at most: on a machine shared with another job, 2 threads ran
7-10x slower than one), each model in 3-110 s (the ViT: about 190 s) on a shared
machine; the state dict and a JSON of its test accuracy are cached as
``cache_dir() / "zoo" / "NAME-sSEED.pt"`` (and ``.json``), written atomically.

    from benchmarks.zoo import load, names
    zm = load("fm_vggbn4")            # trained and cached on first use
    RepresentativeInterpreter(zm.model, zm.layer).fit(zm.train_images[:1000])

    python -m benchmarks.zoo [--split dev|heldout|all] [--train] [--check] [--out docs]
"""
from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from benchmarks import harness
from repinterp.app.outputs import atomic_path, write_json
from repinterp.demo.data import cache_dir, load_fashion_mnist
from repinterp.demo.models import evaluate_accuracy, train_classifier

__all__ = ["DEV", "DIGITS_SPLIT_SEED", "ENTRIES", "HELDOUT", "Entry", "PlainCNN", "ResNetZoo",
           "TinyViT", "ZooModel", "build", "digits", "load", "names", "weights_path"]

#: the seed of the digits' train / test permutation (fixed: the same for every model seed)
DIGITS_SPLIT_SEED = 0
DIGITS_TRAIN = 1200
#: torch threads while training (at most 2)
THREADS = 1


# --- the architectures --------------------------------------------------------------------
class PlainCNN(nn.Module):
    """Conv layers (3x3, padding 1) in ``features``, then a fully connected head in
    ``classifier``. ``convs`` lists ``(out_channels, downsample)``: where ``downsample``,
    the resolution halves after the layer, by ``pool``: ``"max"`` or ``"avg"`` (2x2
    pooling) or ``"stride"`` (the conv itself has stride 2). ``bn`` puts BatchNorm after
    each conv; ``hidden`` are the head's hidden widths, each followed by ``act``."""

    def __init__(self, convs: Sequence[tuple[int, bool]], pool: str = "max", bn: bool = False,
                 hidden: Sequence[int] = (64,), act: Callable[[], nn.Module] = nn.ReLU,
                 dropout: float = 0.0, in_channels: int = 1, size: int = 28,
                 num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout, down in convs:
            stride = 2 if down and pool == "stride" else 1
            layers.append(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
            if down:
                if pool == "max":
                    layers.append(nn.MaxPool2d(2))
                elif pool == "avg":
                    layers.append(nn.AvgPool2d(2))
                elif pool != "stride":
                    raise ValueError(f"unknown pooling {pool!r}")
                size = (size + 1) // 2 if pool == "stride" else size // 2
            cin = cout
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        width = cin * size * size
        for h in hidden:
            head += [nn.Linear(width, h), act()]
            if dropout:
                head.append(nn.Dropout(dropout))
            width = h
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResBlock(nn.Module):
    """Two 3x3 convs (BatchNorm optional) plus the identity, or a strided 1x1 conv where
    the shape changes; ReLU after the addition."""

    def __init__(self, cin: int, cout: int, stride: int = 1, bn: bool = True):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not bn)
        self.bn1 = norm(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=not bn)
        self.bn2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=not bn),
                                          norm(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class ResNetZoo(nn.Module):
    """A strided stem (28 -> 14), residual stages ``layer1..layerK`` (the first at stride
    1, the others at stride 2), then ``classifier``: ``pool`` (a 2x2 max-pool or an
    adaptive average pool to ``pool_size``), Flatten, a ReLU hidden layer, Linear."""

    def __init__(self, widths: Sequence[int] = (16, 32), bn: bool = True,
                 pool: str = "none", pool_size: int = 2, hidden: int = 64,
                 in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, stride=2, padding=1,
                                            bias=not bn),
                                  nn.BatchNorm2d(w0) if bn else nn.Identity(), nn.ReLU())
        size, cin = 14, w0
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", ResBlock(cin, w, stride, bn))
            size, cin = (size + 1) // 2 if stride == 2 else size, w
        self.stages = len(widths)
        head: list[nn.Module] = []
        if pool == "avg":
            head.append(nn.AdaptiveAvgPool2d(pool_size))
            size = pool_size
        elif pool == "max":
            head.append(nn.MaxPool2d(2))
            size //= 2
        self.classifier = nn.Sequential(*head, nn.Flatten(), nn.Linear(cin * size * size, hidden),
                                        nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.classifier(x)


class Attention(nn.Module):
    """Multi-head self-attention written out (no fused fast path)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        y = att.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder layer: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small vision transformer on 1x28x28: a ``patch`` x ``patch`` patch embedding
    (a strided conv: 16 tokens at patch 7) and a class token with learned positions,
    ``depth`` encoder blocks (``blocks.0``...), a final LayerNorm and a linear head on the
    class token. Its tokens ``[n, 1 + tokens, dim]`` are what a split after a block sees."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, mlp: int = 128,
                 patch: int = 4, size: int = 28, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        tokens = (size // patch) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


# --- the entries ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """A zoo entry: how to build the model, where to split it, how to train it."""
    name: str
    dataset: str                        #: "fashion-mnist" or "digits"
    make: Callable[[], nn.Module] = field(repr=False)
    layer: str                          #: the feature layer (a ``named_modules()`` name)
    head: str                           #: what follows the layer, in words
    epochs: int = 2
    n_train: int | None = None          #: train on this many training images (None: all)
    lr: float = 3e-3

    def settings(self) -> dict:
        return {"epochs": self.epochs, "n_train": self.n_train, "lr": self.lr,
                "batch_size": 128}


FM, DG = "fashion-mnist", "digits"
_ENTRIES = [
    # --- DEV ---
    Entry("fm_plain2", FM, lambda: PlainCNN([(16, True), (32, True)], "max"),
          "features", "relu"),
    Entry("fm_avg3", FM, lambda: PlainCNN([(16, True), (32, True), (64, False)], "avg",
                                          hidden=(128,)),
          "features", "relu", epochs=3, n_train=40000),
    Entry("fm_bn5", FM, lambda: PlainCNN([(8, False), (16, True), (16, False), (32, True),
                                          (32, False)], "max", bn=True, hidden=(96,)),
          "features", "relu", n_train=40000),
    Entry("fm_res2", FM, lambda: ResNetZoo((16, 32), bn=False), "layer2", "relu"),
    Entry("fm_gelu", FM, lambda: PlainCNN([(16, True), (32, True)], "max", hidden=(128, 64),
                                          act=nn.GELU), "features", "gelu"),
    Entry("dg_plain2", DG, lambda: PlainCNN([(8, True), (16, True)], "max"),
          "features", "relu", epochs=20),
    Entry("dg_strided3", DG, lambda: PlainCNN([(8, True), (16, True), (32, True)], "stride"),
          "features", "relu", epochs=20),
    # --- HELDOUT ---
    Entry("fm_vggbn4", FM, lambda: PlainCNN([(12, False), (12, True), (24, False), (24, True)],
                                            "max", bn=True, hidden=(128,), dropout=0.2),
          "features", "relu", n_train=30000),
    Entry("fm_strided3", FM, lambda: PlainCNN([(16, True), (32, True), (48, True)], "stride",
                                              hidden=(96,)), "features", "relu"),
    Entry("fm_resbn3", FM, lambda: ResNetZoo((12, 24, 48), bn=True, pool="avg"),
          "layer3", "relu"),
    Entry("fm_wide2", FM, lambda: PlainCNN([(32, True), (64, True)], "avg", hidden=(128,),
                                           dropout=0.3), "features", "relu", n_train=30000),
    Entry("fm_vit", FM, lambda: TinyViT(dim=64, depth=2, heads=4, mlp=128, patch=7),
          "blocks.0", "transformer", epochs=3),
    Entry("dg_silu", DG, lambda: PlainCNN([(8, True), (16, True)], "max", hidden=(64,),
                                          act=nn.SiLU), "features", "silu", epochs=20),
    Entry("dg_bn3", DG, lambda: PlainCNN([(8, True), (16, True), (32, True)], "avg", bn=True),
          "features", "relu", epochs=20),
]
#: every entry by name, in the order above
ENTRIES: dict[str, Entry] = {e.name: e for e in _ENTRIES}
#: the development half: defaults are chosen on these alone
DEV: tuple[str, ...] = ("fm_plain2", "fm_avg3", "fm_bn5", "fm_res2", "fm_gelu", "dg_plain2",
                        "dg_strided3")
#: the held-out half: for reporting only
HELDOUT: tuple[str, ...] = ("fm_vggbn4", "fm_strided3", "fm_resbn3", "fm_wide2", "fm_vit",
                            "dg_silu", "dg_bn3")


def names(split: str = "all") -> tuple[str, ...]:
    """The entries of ``split``: ``"dev"``, ``"heldout"`` or ``"all"`` (DEV then HELDOUT)."""
    if split == "dev":
        return DEV
    if split == "heldout":
        return HELDOUT
    if split == "all":
        return DEV + HELDOUT
    raise ValueError(f"split must be 'dev', 'heldout' or 'all', got {split!r}")


def split_of(name: str) -> str:
    if name in DEV:
        return "dev"
    if name in HELDOUT:
        return "heldout"
    raise KeyError(f"no zoo entry {name!r}; choose from {', '.join(ENTRIES)}")


def build(name: str, seed: int = 0) -> nn.Module:
    """The entry's model, freshly initialised from ``seed`` (the caller's RNG untouched)."""
    if name not in ENTRIES:
        raise KeyError(f"no zoo entry {name!r}; choose from {', '.join(ENTRIES)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ENTRIES[name].make()


# --- the data -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``[N, 1, 28, 28]`` images in [0, 1] (8x8 upscaled
    bilinearly): train images, train labels, test images, test labels (1200 / 597)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0)
    y = torch.as_tensor(d.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    tr, te = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    return x[tr].contiguous(), y[tr], x[te].contiguous(), y[te]


@functools.lru_cache(maxsize=1)
def fashion() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fashion-MNIST in [0, 1] (not normalised): train and test images and labels."""
    x, y = load_fashion_mnist("train", normalize=False)
    xt, yt = load_fashion_mnist("test", normalize=False)
    return x, y, xt, yt


def dataset(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return fashion() if name == FM else digits()


# --- training and the cache -----------------------------------------------------------------
@dataclass(frozen=True)
class ZooModel:
    """A trained zoo model (eval mode) with its split layer, data and test accuracy."""
    name: str
    model: nn.Module = field(repr=False)
    layer: str
    dataset: str
    train_images: torch.Tensor = field(repr=False)   #: the whole training split
    train_labels: torch.Tensor = field(repr=False)
    test_images: torch.Tensor = field(repr=False)
    test_labels: torch.Tensor = field(repr=False)
    accuracy: float
    split: str                                      #: "dev" or "heldout"
    meta: dict = field(default_factory=dict, repr=False)


def weights_path(name: str, seed: int = 0) -> Path:
    return cache_dir() / "zoo" / f"{name}-s{seed}.pt"


@contextlib.contextmanager
def _training_context(threads: int | None = None) -> Iterator[None]:
    """``threads`` (default :data:`THREADS`, 2 at most) torch threads and deterministic
    algorithms, both restored after."""
    before = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, min(2, threads or THREADS)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(before)


def _cached_meta(name: str, seed: int) -> dict | None:
    path = weights_path(name, seed)
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    return meta if meta.get("settings") == ENTRIES[name].settings() else None


def _train(name: str, seed: int, threads: int | None = None) -> tuple[nn.Module, dict]:
    e = ENTRIES[name]
    x, y, xt, yt = dataset(e.dataset)
    if e.n_train is not None and e.n_train < len(x):
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:e.n_train]
        x, y = x[keep], y[keep]
    with _training_context(threads), torch.random.fork_rng():
        torch.manual_seed(seed)
        model = e.make()
        t0 = time.perf_counter()
        train_classifier(model, x, y, epochs=e.epochs, lr=e.lr, batch_size=128, seed=seed,
                         progress=False)
        seconds = time.perf_counter() - t0
        used = torch.get_num_threads()
        accuracy = evaluate_accuracy(model, xt, yt)
    meta = {"name": name, "seed": seed, "dataset": e.dataset, "layer": e.layer,
            "settings": e.settings(), "test_accuracy": accuracy,
            "train_seconds": round(seconds, 1), "threads": used,
            "torch": torch.__version__}
    path = weights_path(name, seed)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(path.with_suffix(".json"), meta)
    return model.eval(), meta


def is_cached(name: str, seed: int = 0) -> bool:
    return _cached_meta(name, seed) is not None


def load(name: str, seed: int = 0, *, train: bool = True, retrain: bool = False,
         threads: int | None = None) -> ZooModel:
    """The zoo entry ``name`` trained from ``seed``: from the cache, else trained now
    (about 1-2 minutes on 2 cores) and cached, unless ``train`` is false (then a
    ``FileNotFoundError``); ``retrain`` trains it again, on ``threads`` torch threads
    (default :data:`THREADS`)."""
    e = ENTRIES.get(name)
    if e is None:
        raise KeyError(f"no zoo entry {name!r}; choose from {', '.join(ENTRIES)}")
    meta = None if retrain else _cached_meta(name, seed)
    if meta is not None:
        model = build(name, seed)
        model.load_state_dict(torch.load(weights_path(name, seed), map_location="cpu",
                                         weights_only=True))
        model.eval()
    elif train or retrain:
        model, meta = _train(name, seed, threads)
    else:
        raise FileNotFoundError(f"zoo model {name} (seed {seed}) is not trained; run "
                                "python -m benchmarks.zoo --train")
    x, y, xt, yt = dataset(e.dataset)
    return ZooModel(name, model, e.layer, e.dataset, x, y, xt, yt,
                    float(meta["test_accuracy"]), split_of(name), meta)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check(zm: ZooModel, n: int = 64) -> dict:
    """Fit the interpreter at the entry's layer on ``n`` training images: it must work."""
    from repinterp import RepresentativeInterpreter
    t0 = time.perf_counter()
    interp = RepresentativeInterpreter(zm.model, zm.layer, progress=False).fit(
        zm.train_images[:n])
    return {"fit_ok": True, "tangent": bool(interp.approximate_),
            "fit_seconds": round(time.perf_counter() - t0, 1)}


def row(zm: ZooModel) -> dict:
    e = ENTRIES[zm.name]
    return {"name": zm.name, "dataset": zm.dataset, "split": zm.split, "layer": zm.layer,
            "head": e.head, "params": params(zm.model), "test_accuracy": round(zm.accuracy, 4),
            "train_seconds": zm.meta.get("train_seconds"), **e.settings()}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--split", default="all", choices=["dev", "heldout", "all"])
    p.add_argument("--train", action="store_true", help="train the entries not cached")
    p.add_argument("--retrain", action="store_true", help="train every entry again")
    p.add_argument("--check", action="store_true",
                   help="also fit the interpreter at each split layer on 64 images")
    p.add_argument("--only", type=harness.names, default=None, help="a,b: these entries")
    p.add_argument("--threads", type=int, default=THREADS, choices=[1, 2])
    harness.add_seed(p)
    harness.add_out(p, help="a folder: writes zoo.json there")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out) if a.out else None
    done: dict[str, dict] = {}
    if out:
        done = {r["name"]: r for r in harness.read_results(out / "zoo.json",
                                                           {"rows": []})["rows"]}
    for name in a.only or names(a.split):
        if not (a.train or a.retrain) and not is_cached(name, a.seed):
            harness.emit({"name": name, "split": split_of(name), "trained": False})
            continue
        zm = load(name, a.seed, retrain=a.retrain, threads=a.threads)
        r = row(zm)
        if a.check:
            r.update(check(zm))
        harness.emit(r)
        done[name] = r
        if out:                                  # after each row: a crash keeps the rest
            harness.write_results(out, "zoo.json", {
                "seed": a.seed, "dev": list(DEV), "heldout": list(HELDOUT),
                "rows": [done[k] for k in ENTRIES if k in done]})


if __name__ == "__main__":
    main()
