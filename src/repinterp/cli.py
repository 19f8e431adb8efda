"""Command line: a thin layer over the library.

Exit codes: 0 success, 2 bad input or usage (one line on stderr), 1 internal error
(one line; the traceback only with ``--debug``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError

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


def _cmd_explain(args: argparse.Namespace) -> int:
    import torch

    from .data import FASHION_CLASSES, load_fashion_mnist
    from .interpreter import RepresentativeInterpreter
    from .models import FashionVGG
    from .report import region_stats, write_report
    from .summary import ClassSummary, Summary

    model = FashionVGG()
    path = Path(args.model)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise UserError(f"{path} is not a state dict of the demo architecture "
                        f"({_first_line(exc)})") from exc
    x, _ = load_fashion_mnist("train", args.data)
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(x), generator=gen)[:args.references]
    refs = x[idx]
    interp = RepresentativeInterpreter(model, args.layer, num_boundaries=args.num_boundaries,
                                       seed=args.seed, progress=not args.quiet).fit(refs)
    ri = interp.explain(args.seed_index)
    x_test, _ = load_fashion_mnist("test", args.data)
    feats = interp.features(x_test)
    stats = {id(ri): region_stats(ri, feats, interp.logits(feats).argmax(1).cpu())}
    covered = int((interp.predictions_[ri.members] == ri.predicted_class).sum())
    n_class = int((interp.predictions_ == ri.predicted_class).sum())
    summary = Summary([ClassSummary(ri.predicted_class, n_class, [ri], covered)], 1.0, 1)
    out = Path(args.out or "out/explain")
    write_report(out, summary, refs, class_names=FASHION_CLASSES, stats=stats,
                 names=[f"train[{i}]" for i in idx.tolist()],
                 title=f"repinterp: region of reference {args.seed_index}",
                 meta={"model": str(path), "layer": interp.layer, "references": len(refs)})
    print(f"region of reference {args.seed_index} ({FASHION_CLASSES[ri.predicted_class]}): "
          f"{ri.size} members, {ri.num_boundaries} boundaries, held-out purity "
          f"{stats[id(ri)].purity}; report: {out / 'report.html'}")
    return 0


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


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
    p.add_argument("--model", required=True, help="state dict of the demo architecture")
    p.add_argument("--layer", default="features", help="feature layer name")
    p.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--seed-index", type=int, default=0, help="index of the seed reference")
    p.add_argument("--references", type=int, default=10000)
    p.add_argument("--num-boundaries", type=int, default=50)
    p.set_defaults(func=_cmd_explain)
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
              f"{_one_line(_first_line(exc))} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
