"""What several test modules share, imported as ``helpers`` (pytest puts ``tests/`` on
the path, as it does for ``nets``; a child Python run with ``cwd=`` this folder imports
it the same way): the command line and its one-line errors, files written byte by byte,
a walk of ``/proc``, region comparisons, small hand-built networks, and the fitted parts
of an interpreter built as ``fit`` builds them, for unit tests of those parts."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from nets import tiny_cnn, tiny_images
from torch import nn

from repinterp.core.region import Region

TESTS = Path(__file__).resolve().parent


# --- the command line ---------------------------------------------------------------------
def cli(capsys, *argv) -> tuple[int, str, str]:
    """``main`` on ``argv`` (each item as a string): exit code, stdout, stripped stderr."""
    from repinterp.cli import main
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip()


def one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2, one line that starts as every error does (warnings aside), no traceback,
    and every one of ``needles`` in that line."""
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("repinterp: warning:")]
    assert len(lines) == 1 and lines[0].startswith("repinterp: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], err


# --- files --------------------------------------------------------------------------------
def script_model(folder: Path, seed: int = 0, name: str = "m.pt") -> Path:
    """``tiny_cnn(seed)`` in float32 saved as TorchScript in ``folder``; its path."""
    path = Path(folder) / name
    torch.jit.script(tiny_cnn(seed, dtype=torch.float32)).save(str(path))
    return path


def pixels(seed: int, n: int) -> np.ndarray:
    """``n`` 8-bit 1x8x8 pictures (``tiny_images`` as pixels: the pixel rule refuses
    float arrays outside [0, 1])."""
    x = tiny_images(seed, n).float()
    return (x * 40 + 128).clamp(0, 255).round().to(torch.uint8).numpy()


def png(path: Path, arr: np.ndarray) -> None:
    """An 8-bit PNG of ``arr`` (Pillow), its folders made."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body))


def png16(path: Path, arr: np.ndarray, filters: tuple[int, ...] = (0,)) -> None:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour), each row
    with the next of ``filters`` (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    h, w, c = arr.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    raw = arr.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * bpp).astype(int)
    rows, prev = [], np.zeros(w * bpp, int)
    for y in range(h):
        kind = filters[y % len(filters)]
        cur = raw[y]
        left = np.concatenate([np.zeros(bpp, int), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, int), prev[:-bpp]])
        if kind == 0:
            f = cur
        elif kind == 1:
            f = cur - left
        elif kind == 2:
            f = cur - prev
        elif kind == 3:
            f = cur - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            f = cur - pred
        rows.append(bytes([kind]) + bytes((f & 255).astype(np.uint8)))
        prev = cur
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(
        ">IIBBBBB", w, h, 16, color, 0, 0, 0)) + png_chunk(b"IDAT", zlib.compress(
            b"".join(rows))) + png_chunk(b"IEND", b""))


def write_idx_labels(path: Path, labels: list[int]) -> None:
    """An IDX label file (MNIST's ``idx1-ubyte``: magic ``0 0 8 1``, the count, one byte a
    label), gzipped when ``path`` ends in ``.gz``."""
    body = struct.pack(">HBBI", 0, 8, 1, len(labels)) + bytes(labels)
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(body)
    else:
        path.write_bytes(body)


def tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` by its SHA-256, and every link (to a file or a folder) by
    its target; names read as bytes (they may be invalid UTF-8) and decoded as the file
    system's names are (``os.fsdecode``)."""
    base = os.fsencode(root)
    out = {}
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(p, base))
            if os.path.islink(p):
                out[rel] = "-> " + os.fsdecode(os.readlink(p))
            elif name in files:
                with open(p, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


# --- processes (from /proc) ---------------------------------------------------------------
def processes() -> dict[int, tuple[int, bytes]]:
    """Every process this user can read: pid -> (parent pid, command line with its NULs
    as spaces)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        table[int(entry)] = (int(stat[stat.rindex(b")") + 2:].split()[1]), cmd)
    return table


def descendants(root: int, table: dict[int, tuple[int, bytes]] | None = None) -> set[int]:
    """The processes descending from ``root`` (not ``root`` itself)."""
    table = processes() if table is None else table
    out: set[int] = set()
    todo = [root]
    while todo:
        p = todo.pop()
        kids = [c for c, (q, _) in table.items() if q == p and c not in out]
        out.update(kids)
        todo.extend(kids)
    return out


# --- a region index -------------------------------------------------------------------------
def tiny_index(n: int = 700):
    """A region index of ``n`` seeded images through :func:`nets.tiny_cnn` (float32, split
    after ``"2"``, a bank of 96 boundaries from a pilot of 150): ``(index, worker,
    images)``."""
    from repinterp import RepresentativeInterpreter
    from repinterp.core.index import IndexWorker, RegionIndex
    model = tiny_cnn(0, dtype=torch.float32)
    x = tiny_images(0, n).float()
    pilot = RepresentativeInterpreter(model, "2", num_boundaries=8, progress=False).fit(x[:150])
    bank = pilot.sample_bank(96, per_origin=8, seed=0)
    worker = IndexWorker(model, "2", bank)
    return RegionIndex(bank, worker.rows(x), tuple(worker.network.feature_shape)), worker, x


# --- regions ------------------------------------------------------------------------------
def same_region(a: Region, b: Region, where: str = "") -> None:
    """Every field of :class:`Region` (a field added later is compared too): tensors by
    dtype and value, everything else by type and ``==``."""
    for f in dataclasses.fields(Region):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype, (where, f.name)
            assert torch.equal(va, vb), (where, f.name)
        else:
            assert type(va) is type(vb) and va == vb, (where, f.name, va, vb)


def region(members: list[int], cls: int = 1, logic: int | None = None) -> Region:
    """A hand-made region of ``members`` (seed first), one boundary, 2-d features."""
    n = len(members)
    return Region(predicted_class=cls, weights=torch.zeros(1, 2), biases=torch.zeros(1),
                  boundary_points=torch.zeros(1, 2), pairs=torch.tensor([[cls, 0]]),
                  delta=0, min_delta=0, members=torch.tensor(members),
                  member_distances=torch.arange(n, dtype=torch.float32), purity=1.0,
                  seed_index=members[0], seed_values=torch.zeros(1), feature_shape=(2,),
                  logic=logic)


# --- a network with two reasons for one class --------------------------------------------
MARK = (0, 3)          # the mark's pixel: top-right corner of a 4x4 image


def two_logic_net() -> nn.Module:
    """``psi = ReLU(x)`` on 1x4x4 images; the head's hidden units are: the left half
    (object A), 4 x the mark pixel, the rest of the right half (object B); class 0 =
    object A + mark, class 1 = object B. Class 0 thus has two reasons."""
    conv = nn.Conv2d(1, 1, 1)
    lin1, lin2 = nn.Linear(16, 3), nn.Linear(3, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        left = torch.zeros(4, 4)
        left[:, :2] = 1
        mark = torch.zeros(4, 4)
        mark[MARK] = 4
        right = torch.zeros(4, 4)
        right[:, 2:] = 1
        right[MARK] = 0
        lin1.weight.copy_(torch.stack([left, mark, right]).flatten(1))
        lin1.bias.zero_()
        lin2.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        lin2.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), lin1, nn.ReLU(), lin2).double()


def two_logic_images(seed: int = 0, scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """40 images of class 0 by the object, 30 of class 0 by the mark (object B plus the
    mark), 50 of class 1 (object B), each times ``scale``: returns the images and the
    group of each (0, 1, 2)."""
    g = torch.Generator().manual_seed(seed)

    def u(n, lo, hi, shape=(4, 4)):
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g, dtype=torch.float64)

    def make(n, left, right, mark):
        x = torch.zeros(n, 4, 4, dtype=torch.float64)
        x[:, :, :2] = u(n, *left, (4, 2))
        x[:, :, 2:] = u(n, *right, (4, 2))
        x[:, MARK[0], MARK[1]] = mark
        return x

    sizes = [40 * scale, 30 * scale, 50 * scale]
    x = torch.cat([make(sizes[0], (0.8, 1.2), (0.0, 0.2), 0.0),
                   make(sizes[1], (0.0, 0.2), (0.3, 0.5), 3.0),
                   make(sizes[2], (0.0, 0.2), (0.8, 1.2), 0.0)])[:, None]
    groups = torch.tensor([0] * sizes[0] + [1] * sizes[1] + [2] * sizes[2])
    return x, groups


# --- an interpreter's parts, built as fit builds them ------------------------------------
def split_store(model: nn.Module, layer: str, references: torch.Tensor, *,
                use_prefix: bool = True, feature_dtype: torch.dtype | None = None,
                store_dir: str | os.PathLike | None = None, **network):
    """The :class:`~repinterp.core.network.SplitNetwork` and the
    :class:`~repinterp.core.store.FeatureStore` of ``references``, made as
    ``RepresentativeInterpreter.fit`` makes them (``network``: the network's keyword
    arguments), for unit tests of those two parts."""
    from repinterp.core.network import SplitNetwork
    from repinterp.core.split import linear_prefix, split_model
    from repinterp.core.store import FeatureStore
    net = SplitNetwork(model, layer, **{"progress": False, **network})
    net.check_split(references[:8])
    z = net.features(references, dtype=feature_dtype, storage=store_dir)
    prefix = linear_prefix(net.head) if use_prefix else None
    sink: list[torch.Tensor] = []
    net.logits(z, capture=prefix, sink=sink)
    store = FeatureStore(z, net.dtype, net.head, None if prefix is None else
                         (prefix, torch.cat(sink), split_model(net.head, prefix).head),
                         device=net.device)
    return net, store


def folded_summary(out: Path) -> Path:
    """A summary (``write_summary`` into ``out``) of ``tiny_cnn(0)`` on 300 images, whose
    small classes end with regions that add one image or none (folded in reports)."""
    from repinterp import RepresentativeInterpreter
    from repinterp.app.pipeline import write_summary
    x = tiny_images(0, 300).float()
    interp = RepresentativeInterpreter(tiny_cnn(0, dtype=torch.float32), "2",
                                       num_boundaries=12, seed=0, progress=False).fit(x)
    write_summary(out, interp.summarize(), x, heatmap=interp.heatmap, across=interp.across)
    return out


def photos_224(root: Path, n: int, name: str) -> Path:
    """``root/my_images``: ``n`` 224x224 JPEGs (a random flat colour plus noise, seeded)
    in the class folders cats, dogs, birds (image ``i`` in folder ``i % 3``), named
    ``name.format(i=i)``; and ``root/model.pt``, a torchvision resnet18 state dict with
    3 classes and random weights, its classifier centred on those images
    (``benchmarks.torchvision_matrix.diversify``). Returns the folder."""
    import torchvision
    from PIL import Image

    from benchmarks.torchvision_matrix import diversify
    from repinterp import load_images
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "my_images" / ("cats", "dogs", "birds")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (1, 1, 3)) * np.ones((224, 224, 3))
        img = np.clip(base + rng.normal(0, 40, (224, 224, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / name.format(i=i), quality=90)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    diversify(model, load_images(root / "my_images", channels=3, size=(224, 224)).images)
    torch.save(model.state_dict(), root / "model.pt")
    return root / "my_images"
