"""The project's own demo CNNs, trained on Fashion-MNIST and cached."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from ..app.outputs import atomic_path, write_json
from ..core.errors import UserError
from ..core.progress import progress_bar
from .data import cache_dir, load_fashion_mnist

#: The demo models' weights shipped with the package (trained by the project).
SHIPPED = Path(__file__).parent / "weights"

__all__ = ["ARCHS", "DEMO_LAYERS", "FashionResNet", "FashionVGG", "demo_weights",
           "evaluate_accuracy",
           "load_demo_model", "train_classifier"]


class FashionVGG(nn.Module):
    """A small VGG-style CNN: two conv blocks (conv, ReLU, max-pool), then a VGG-like
    fully connected ReLU classifier with dropout. ``features`` outputs ``2w x 7 x 7``."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 256), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FashionResNet(nn.Module):
    """A small ResNet of torchvision ``BasicBlock``s: stem, three residual stages
    (``w``, ``2w``, ``4w`` channels; 28, 14, 7 pixels), global average pooling, linear.
    Split after ``layer2``, the head holds a residual block with BatchNorm."""

    def __init__(self, num_classes: int = 10, width: int = 12, in_channels: int = 1):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        def down(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False),
                                 nn.BatchNorm2d(cout))

        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU())
        self.layer1 = BasicBlock(w, w)
        self.layer2 = BasicBlock(w, 2 * w, stride=2, downsample=down(w, 2 * w))
        self.layer3 = BasicBlock(2 * w, 4 * w, stride=2, downsample=down(2 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


ARCHS = {"vgg": FashionVGG, "resnet": FashionResNet}
#: The feature layer each demo architecture is split at.
DEMO_LAYERS = {"vgg": "features", "resnet": "layer2"}


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 1000) -> float:
    was = model.training
    model.eval()
    try:
        correct = sum(int((model(images[i:i + batch_size]).argmax(1)
                           == labels[i:i + batch_size]).sum())
                      for i in range(0, len(images), batch_size))
    finally:
        model.train(was)
    return correct / len(images)


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     epochs: int = 3, lr: float = 3e-3, batch_size: int = 128, seed: int = 0,
                     progress: bool = True) -> nn.Module:
    """Train with Adam, a one-cycle learning rate and cross-entropy; deterministic for a
    given ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.15)
    model.train()
    bar = progress_bar(total=steps, desc="training", unit="step", enabled=progress)
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    return model


def demo_weights(arch: str = "vgg", *, seed: int = 0, epochs: int = 3) -> Path | None:
    """The state dict :func:`load_demo_model` loads without training: the one this
    machine trained (the cache), else the one shipped with repinterp; None if neither
    (or its JSON) exists."""
    key = f"{arch}-e{epochs}-s{seed}"
    for found in (cache_dir() / "models" / f"{key}.pt", SHIPPED / f"{key}.pt"):
        if found.exists() and found.with_suffix(".json").exists():
            return found
    return None


def load_demo_model(arch: str = "vgg", *, seed: int = 0, epochs: int = 3,
                    data_root: str | None = None, progress: bool = True,
                    retrain: bool = False) -> tuple[nn.Module, dict]:
    """The demo model: the one this machine trained (the cache), else the weights
    shipped with repinterp (``repinterp/demo/weights``: trained by the project with these
    same settings; their JSON says on which torch and how long it took), else trained
    on Fashion-MNIST now and cached; ``retrain`` trains it again.

    Returns the model (eval mode) and its metadata: training settings, measured test
    accuracy and training time. The cache key holds every setting.
    """
    lr, batch_size = 3e-3, 128
    settings = {"arch": arch, "seed": seed, "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "dataset": "fashion-mnist"}
    key = f"{arch}-e{epochs}-s{seed}"
    weights = cache_dir() / "models" / f"{key}.pt"
    meta_file = weights.with_suffix(".json")
    if arch not in ARCHS:
        raise UserError(f"unknown demo architecture {arch!r}; choose from {sorted(ARCHS)}")
    # seeded initial weights and dropout masks; the caller's RNG is left untouched
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ARCHS[arch]()
        shipped = SHIPPED / f"{key}.pt"
        for found in (weights, shipped):
            meta_found = found.with_suffix(".json")
            if found.exists() and meta_found.exists() and not retrain:
                model.load_state_dict(torch.load(found, map_location="cpu",
                                                 weights_only=True))
                meta = json.loads(meta_found.read_text())
                meta["weights"] = ("shipped with repinterp" if found == shipped
                                   else "trained on this machine")
                return model.eval(), meta
        x_train, y_train = load_fashion_mnist("train", data_root)
        x_test, y_test = load_fashion_mnist("test", data_root)
        start = time.perf_counter()
        train_classifier(model, x_train, y_train, epochs=epochs, lr=lr,
                         batch_size=batch_size, seed=seed, progress=progress)
    meta = dict(settings, weights="trained on this machine",
                train_seconds=round(time.perf_counter() - start, 1),
                test_accuracy=evaluate_accuracy(model, x_test, y_test),
                torch=torch.__version__)
    with atomic_path(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(meta_file, meta)
    return model.eval(), meta
