"""The command line's parser: every command, its options and their defaults (those that
change a result come from :mod:`repinterp.core.defaults`)."""
from __future__ import annotations

import argparse
from typing import Any

from ..core import defaults
from ..core.compare import MIN_JACCARD, MIN_PART, MIN_SHARE
from ..core.errors import UserError

__all__ = ["FEATURE_DTYPES", "MAX_SIDE", "build_parser", "model_pair", "parse_size"]

FEATURE_DTYPES = ("float32", "float16", "bfloat16")
MAX_SIDE = 8192                       #: the largest image side --size takes


def parse_size(spec: str | None) -> tuple[int, int] | None:
    """``--size``: ``H,W`` (or ``HxW``) or one number for both, each in 1..MAX_SIDE."""
    if spec is None:
        return None
    try:
        vals = [int(v) for v in spec.replace("x", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals) < 1:
        raise UserError(f"--size must be H,W or one positive number, got {spec!r}")
    if max(vals) > MAX_SIDE:
        raise UserError(f"--size {spec} is larger than {MAX_SIDE} pixels a side; "
                        "images that large do not fit a CNN's memory")
    return (vals[0], vals[-1])


def model_pair(a: argparse.Namespace) -> tuple:
    """``compare``'s two models (:class:`~repinterp.app.pipeline.ModelSource`): ``--model
    A --model B``, or ``--arch NAME --weights A --weights B`` (one architecture, two sets
    of weights); anything else is a :class:`UserError`."""
    from ..app.pipeline import ModelSource
    files, weights = a.model or [], a.weights or []
    if len(files) == 2 and not weights and not a.arch:
        given = [{"model_file": f} for f in files]
    elif len(weights) == 2 and a.arch and not files:
        given = [{"arch": a.arch, "weights": w} for w in weights]
    else:
        raise UserError("compare takes two models: --model A --model B, or --arch NAME "
                        "--weights A --weights B")
    first, second = (ModelSource(num_classes=a.num_classes, trust_pickle=a.trust_pickle,
                                 **g) for g in given)
    return first, second


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _summary_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coverage", type=float, default=defaults.COVERAGE,
                   help=f"share of each class to cover (default: {defaults.COVERAGE})")
    p.add_argument("--max-regions", type=int, default=defaults.MAX_REGIONS,
                   help=f"regions per class at most (default: {defaults.MAX_REGIONS})")
    p.add_argument("--target-purity", type=_target, default=defaults.TARGET_PURITY,
                   help="purity every region must show on a held-out fifth of the "
                   "images it was not grown on ('none': the paper's rule, no held-out "
                   f"check; default: {defaults.TARGET_PURITY})")


def _target(text: str) -> float | None:
    """``--target-purity``: a number, or ``none``."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'none': {text!r}") from None


def _inputs(p: argparse.ArgumentParser, *, data: bool = True, twice: bool = False) -> None:
    """The model and image options; ``twice``: ``--weights`` and ``--model`` given twice
    (``compare``: model A, then model B)."""
    g = p.add_argument_group("model")
    again: dict[str, Any] = {"action": "append"} if twice else {}
    second = " (twice: model A, then model B)" if twice else ""
    g.add_argument("--arch", help="demo architecture (vgg, resnet), torchvision name (resnet18) "
                   "or timm:NAME (with timm installed; random weights)")
    g.add_argument("--weights", **again, help="state dict for --arch (loaded with "
                   "weights_only), or torchvision weights such as "
                   "ResNet50_Weights.IMAGENET1K_V2 (from torch's hub cache; class names "
                   "from their metadata)" + second)
    g.add_argument("--num-classes", type=int, default=None, help="classes of --arch")
    g.add_argument("--model", **again, help="TorchScript file, a state dict trained by "
                   "repinterp, or a pickled model with --trust-pickle" + second)
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling a whole model (runs code from the file)")
    if not data:
        return
    g.add_argument("--layer", default=None, help="feature layer (default: the one "
                   "`repinterp layers` suggests)")
    g.add_argument("--approximate", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--device", default=None, help="cpu or cuda")
    g.add_argument("--num-boundaries", type=int, default=defaults.NUM_BOUNDARIES,
                   help="boundaries sampled per seed image, |Q| in the paper (default: "
                   f"{defaults.NUM_BOUNDARIES}, the paper's)")
    g.add_argument("--feature-dtype", choices=sorted(FEATURE_DTYPES), default=None,
                   help="storage dtype of the reference features (default: the model's)")
    g.add_argument("--store-dir", default=None, help="keep the reference features in a "
                   "memory-mapped file in this directory instead of memory")
    d = p.add_argument_group("images")
    d.add_argument("--data", default=None, help="folder of images (ImageFolder or flat), "
                   ".npy/.npz, IDX file, or a folder of MNIST-style IDX files (required "
                   "except with --index)")
    d.add_argument("--references", type=int, default=None, help="use N images drawn at "
                   "random (with --seed), stratified over an ImageFolder's class folders")
    d.add_argument("--size", default=None, help="resize to H,W (or one number)")
    d.add_argument("--normalize", default=None, help="imagenet, fashion-mnist, none or "
                   "MEAN,STD (default: imagenet for RGB, none otherwise; fashion-mnist for "
                   "the demo architectures)")
    d.add_argument("--pixel-range", default=None, metavar="LO,HI|raw",
                   help="the range of pixel values that are not 8- or 16-bit integers "
                   "(e.g. 0,255 for float or int16 arrays of 8-bit pictures); raw: take "
                   "them as they are (already the model's input). Default: uint8 / 255, "
                   "uint16 / 65535, floats must lie in [0, 1]")
    d.add_argument("--npz-array", default=None, metavar="NAME",
                   help="the array of an .npz file that holds the images")
    d.add_argument("--strict", action="store_true", help="fail on an unreadable file")
    d.add_argument("--heldout", default=None, help="held-out images to measure purity on")
    d.add_argument("--labels", default=None, help="labels of --data: a CSV of path,label "
                   "(a class index or name), an IDX labels file, or none (default: an "
                   "ImageFolder's class folders, or the labels file beside IDX images); "
                   "they add each region's label mix and disagreeing members")
    d.add_argument("--class-names", default=None,
                   help="file with one class name per line, or torchvision weights whose "
                   "categories to use (default: those of --weights when it names "
                   "torchvision weights, Fashion-MNIST's for the demo architectures, "
                   "else class indices)")


def _cache(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cache", default=True, metavar="DIR", help="folder of saved fits: a "
                   "command on unchanged images, model and settings restores the fit "
                   "instead of computing it (default: $REPINTERP_FIT_CACHE, else "
                   "~/.cache/repinterp/fits)")
    g.add_argument("--no-cache", dest="cache", action="store_false",
                   help="neither read nor write saved fits")


def _engine(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help=f"{what}: local (this process) or ray (a local Ray, or the cluster "
                   "of --ray-address)")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: "
                   "the CPUs of this machine)")
    p.add_argument("--ray-address", default=None, help="join a running Ray cluster "
                   "(`ray start --head` prints its address)")
    p.add_argument("--ray-wait", type=float, default=defaults.RAY_WAIT_S, metavar="SECONDS",
                   help="how long to wait for the cluster at --ray-address to answer "
                   "(default: %(default)s)")


def build_parser(commands: dict | None = None) -> argparse.ArgumentParser:
    """The parser; ``commands`` maps each command's name to the function it runs."""
    commands = commands or {}
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="repinterp",
        description="Representative interpretations of CNN classifiers (ICCV 2021).")
    parser.add_argument("--version", action="version", version=f"repinterp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="summarise the built-in Fashion-MNIST CNN into a report")
    _common(p)
    _summary_options(p)
    p.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--references", type=int, default=10000, help="training images used")
    p.add_argument("--num-boundaries", type=int, default=None,
                   help="boundaries sampled per seed (default: the demo's, see the README)")
    p.add_argument("--retrain", action="store_true", help="train the demo CNN again "
                   "instead of using the weights shipped with repinterp (about 4 minutes "
                   "on 2 CPU cores)")
    p.set_defaults(func=commands.get("demo"))

    p = sub.add_parser("explain", help="the region of one seed image")
    _common(p)
    _inputs(p)
    _cache(p)
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed-index", type=int, default=0, help="index of the seed image")
    seed.add_argument("--image", default=None, help="an outside image file as the seed")
    p.add_argument("--summary", default=None, help="with --image: a summary directory "
                   "(or its summary.pt) to locate the image in, without refitting")
    p.add_argument("--index", default=None, help="with --image: a region index "
                   "(`repinterp index`): the image's region and closest indexed images")
    _engine(p, "with --index, where the greedy runs over the index's rows")
    p.set_defaults(func=commands.get("explain"))

    p = sub.add_parser("summarize", help="peel every predicted class into regions")
    _common(p)
    _inputs(p)
    _cache(p)
    _summary_options(p)
    p.add_argument("--index", default=None, help="summarise a region index "
                   "(`repinterp index`) instead of fitting on --data")
    p.add_argument("--separate-logics", action="store_true", help="split each class by "
                   "the decision logic its images are predicted by (local linear models) "
                   "before peeling it into regions: finds groups predicted for a different "
                   "reason, e.g. a watermark")
    p.add_argument("--max-logics", type=int, default=defaults.MAX_LOGICS,
                   help="logics per class at most (with --separate-logics)")
    _engine(p, "with --index, where the greedy runs over the index's rows")
    p.set_defaults(func=commands.get("summarize"))

    p = sub.add_parser("compare", help="what changed between two models: both summarised "
                       "on the same images, their regions matched by the images they hold")
    _common(p)
    _inputs(p, twice=True)
    _cache(p)
    _summary_options(p)
    for flag, default, what in (
            ("--min-jaccard", MIN_JACCARD, "Jaccard index of a kept or moved region"),
            ("--min-share", MIN_SHARE, "share of a region that 'mostly' means (split, "
             "merged)"),
            ("--min-part", MIN_PART, "share of a split or merged region each part holds")):
        p.add_argument(flag, type=float, default=default,
                       help=f"{what}, at least (default: {default})")
    p.set_defaults(func=commands.get("compare"))

    p = sub.add_parser("index", help="index every image's side of a bank of boundaries "
                       "(in-process or on Ray Data), for summaries beyond memory")
    _common(p)
    _inputs(p)
    p.add_argument("--bank", type=int, default=1024, help="boundaries in the bank")
    p.add_argument("--pilot", type=int, default=2000, help="pilot images the bank is "
                   "sampled from")
    p.add_argument("--shard-size", type=int, default=4096, help="images per shard")
    _engine(p, "how the shards are written: one after another in this process, or on "
            "Ray Data")
    p.set_defaults(func=commands.get("index"))

    p = sub.add_parser("layers", help="candidate layers, the verdict on the head after "
                       "each, and a suggestion")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--depth", type=int, default=3, help="list layers down to this many "
                   "levels (1: the model's children; 0: all); each costs one trace")
    _inputs(p, data=False)
    p.set_defaults(func=commands.get("layers"))
    return parser
