"""Command line: a thin layer over the library.

Exit codes: 0 success, 2 bad input or usage (one line on stderr), 1 internal error
(one line; the traceback only with ``--debug``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError, first_line

__all__ = ["main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    figures = run_demo(args.out or "out/demo", seed=args.seed, references=args.references,
                       coverage=args.coverage, max_regions=args.max_regions,
                       data_root=args.data, progress=not args.quiet)
    print(json.dumps(figures, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .study import run_evaluation
    run_evaluation(args.out or "docs", quick=args.quick, seed=args.seed,
                   archs=tuple(args.archs.split(",")), data_root=args.data,
                   progress=not args.quiet)
    return 0


def _inputs(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", help="demo architecture (vgg, resnet) or torchvision name")
    g.add_argument("--weights", help="state dict for --arch (loaded with weights_only)")
    g.add_argument("--num-classes", type=int, default=None, help="classes of --arch")
    g.add_argument("--model", help="TorchScript file, a state dict trained by repinterp, "
                   "or a pickled model with --trust-pickle")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling a whole model (runs code from the file)")
    if not data:
        return
    g.add_argument("--layer", default=None, help="feature layer (see `repinterp layers`)")
    g.add_argument("--approximate", action="store_true",
                   help="accept a head that is not piecewise linear (local linearisation)")
    g.add_argument("--device", default=None, help="cpu or cuda")
    g.add_argument("--num-boundaries", type=int, default=50)
    d = p.add_argument_group("images")
    d.add_argument("--data", required=True, help="folder of images (ImageFolder or flat), "
                   ".npy/.npz, IDX file, or a folder of MNIST-style IDX files")
    d.add_argument("--references", type=int, default=None, help="use the first N images")
    d.add_argument("--size", default=None, help="resize to H,W (or one number)")
    d.add_argument("--normalize", default=None, help="imagenet, fashion-mnist, none or "
                   "MEAN,STD (default: imagenet for RGB, none otherwise; fashion-mnist for "
                   "the demo architectures)")
    d.add_argument("--strict", action="store_true", help="fail on an unreadable file")
    d.add_argument("--heldout", default=None, help="held-out images to measure purity on")


def _parse_size(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    try:
        vals = [int(v) for v in spec.replace("x", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals) < 1:
        raise UserError(f"--size must be H,W or one positive number, got {spec!r}")
    return (vals[0], vals[-1])


def _load(args: argparse.Namespace):
    """Model, references, optional held-out images, and the interpreter fitted on them."""
    import warnings

    from .interpreter import RepresentativeInterpreter
    from .loading import expected_channels, load_images, load_model
    from .models import ARCHS, DEMO_LAYERS

    model = load_model(arch=args.arch, weights=args.weights, num_classes=args.num_classes,
                       model_file=args.model, trust_pickle=args.trust_pickle)
    demo = next((name for name, cls in ARCHS.items() if type(model) is cls), None)
    layer = args.layer or (DEMO_LAYERS[demo] if demo else None)
    if layer is None:
        raise UserError("--layer is required (list the candidates with `repinterp layers`)")
    normalize = args.normalize or ("fashion-mnist" if demo else None)
    opts = dict(channels=expected_channels(model), size=_parse_size(args.size),
                normalize=normalize, strict=args.strict)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refs = load_images(args.data, limit=args.references, **opts)
        held = load_images(args.heldout, **opts) if args.heldout else None
    for w in caught:
        print(f"repinterp: warning: {w.message}", file=sys.stderr)
    interp = RepresentativeInterpreter(model, layer, num_boundaries=args.num_boundaries,
                                       seed=args.seed, approximate=args.approximate,
                                       device=args.device, progress=not args.quiet)
    interp.fit(refs.images)
    return interp, refs, held, opts


def _heldout_stats(interp, held, regions) -> dict:
    from .report import heldout_stats
    return heldout_stats(interp, interp.features(held.images), regions) if held else {}


def _meta(args: argparse.Namespace, interp, refs) -> dict:
    return {"model": args.arch or args.model, "layer": interp.layer,
            "references": len(refs.names), "skipped_files": len(refs.skipped),
            "approximate": interp.approximate, "seed": args.seed}


def _cmd_explain(args: argparse.Namespace) -> int:
    from .loading import load_images
    from .report import write_report
    from .summary import ClassSummary, Summary

    interp, refs, held, opts = _load(args)
    seed_images = {}
    if args.image:
        image = load_images(args.image, **opts).images[0]
        ri = interp.explain(image)
        seed_images[id(ri)] = image
        what = args.image
    else:
        ri = interp.explain(args.seed_index)
        what = refs.names[args.seed_index]
    stats = _heldout_stats(interp, held, [ri])
    covered = int((interp.predictions_[ri.members] == ri.predicted_class).sum())
    n_class = int((interp.predictions_ == ri.predicted_class).sum())
    summary = Summary([ClassSummary(ri.predicted_class, n_class, [ri], covered)], 1.0, 1)
    out = Path(args.out or "out/explain")
    write_report(out, summary, refs.images, stats=stats, names=refs.names,
                 seed_images=seed_images, title=f"repinterp: region of {what}",
                 meta=_meta(args, interp, refs))
    print(f"region of {what} (class {ri.predicted_class}): {ri.size} members, "
          f"{ri.num_boundaries} boundaries, delta {ri.delta}; report: {out / 'report.html'}")
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from .report import write_report

    interp, refs, held, _ = _load(args)
    summary = interp.summarize(coverage=args.coverage, max_regions=args.max_regions)
    stats = _heldout_stats(interp, held, summary.regions)
    out = Path(args.out or "out/summary")
    write_report(out, summary, refs.images, stats=stats, names=refs.names,
                 title="repinterp summary", meta=_meta(args, interp, refs))
    print(f"{len(summary.regions)} regions over {len(summary.classes)} classes; "
          f"report: {out / 'report.html'}")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from .loading import load_model
    from .split import layer_table

    model = load_model(arch=args.arch, weights=args.weights, num_classes=args.num_classes,
                       model_file=args.model, trust_pickle=args.trust_pickle)
    rows = layer_table(model)
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"{'layer':{width}}  {'type':18}  head after it")
    for name, kind, status in rows:
        print(f"{name:{width}}  {kind:18}  {status}")
    return 0


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repinterp",
        description="Representative interpretations of CNN classifiers (ICCV 2021).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="summarise the built-in Fashion-MNIST CNN into a report")
    _common(p)
    p.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--references", type=int, default=10000, help="training images used")
    p.add_argument("--coverage", type=float, default=0.9, help="share of each class to cover")
    p.add_argument("--max-regions", type=int, default=6, help="regions per class at most")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("evaluate", help="the paper's AD/AI protocol against CAM baselines")
    _common(p)
    p.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--quick", action="store_true", help="small run (one model, 20 seeds)")
    p.add_argument("--archs", default="vgg,resnet", help="demo architectures, comma separated")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("explain", help="the region of one seed image")
    _common(p)
    _inputs(p)
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed-index", type=int, default=0, help="index of the seed image")
    seed.add_argument("--image", default=None, help="an outside image file as the seed")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("summarize", help="peel every predicted class into regions")
    _common(p)
    _inputs(p)
    p.add_argument("--coverage", type=float, default=0.9, help="share of each class to cover")
    p.add_argument("--max-regions", type=int, default=6, help="regions per class at most")
    p.set_defaults(func=_cmd_summarize)

    p = sub.add_parser("layers", help="candidate layers and whether the head is PL")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _inputs(p, data=False)
    p.set_defaults(func=_cmd_layers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"repinterp: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("repinterp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        print(f"repinterp: internal error: {type(exc).__name__}: "
              f"{_one_line(first_line(exc))} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
