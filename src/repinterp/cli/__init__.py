"""Command line: the parser, and one call per command into the pipelines (``app.*``).

Exit codes: 0 success, 2 bad input or usage (one line on stderr), 1 internal error
(one line; the traceback only with ``--debug``), 130 interrupted (SIGINT or SIGTERM).
"""
from __future__ import annotations

import argparse
import functools
import re
import signal
import sys
import threading
import warnings

from ..core.errors import UserError, first_line
from ..core.words import layer_words
from .parser import build_parser, model_pair, parse_size

__all__ = ["FLAGS", "build_parser", "main"]

#: The library's parameters as the command line spells them (``UserError.param``)
FLAGS = {
    "model": "--arch NAME [--weights FILE] or --model FILE",
    "trusted_model": "--model FILE --trust-pickle",
    "model_file": "--model FILE",
    "weights": "--arch NAME --weights FILE",
    "trust_pickle": "--trust-pickle",
    "size": "--size H,W",
    "normalize": "--normalize",
    "class_names": "--class-names",
    "engine": "--engine ray",
    "bank": "a larger --pilot or --bank",
    "layer": "--layer",
    "data": "--data",
    "image": "--image FILE",
    "pixel_range": "--pixel-range LO,HI",
    "raw": "--pixel-range raw",
    "array": "--npz-array NAME",
    "ray_wait": "--ray-wait SECONDS",
    "workers": "--workers",
    "min_jaccard": "--min-jaccard", "min_share": "--min-share", "min_part": "--min-part",
}


def _families() -> dict:
    """The demo's architectures, with their defaults (layer, normalisation, names) and
    their trained weights (the shipped ones: ``--arch vgg`` is the demo's CNN)."""
    from ..app.pipeline import Family
    from ..demo.data import FASHION_CLASSES
    from ..demo.models import ARCHS, DEMO_LAYERS, demo_weights
    return {name: Family(cls, DEMO_LAYERS[name], "fashion-mnist", FASHION_CLASSES,
                         functools.partial(demo_weights, name))
            for name, cls in ARCHS.items()}


def _model_source(a: argparse.Namespace):
    from ..app.pipeline import ModelSource
    return ModelSource(arch=a.arch, weights=a.weights, num_classes=a.num_classes,
                       model_file=a.model, trust_pickle=a.trust_pickle)


def _fit_fields(a: argparse.Namespace, model=None) -> dict:
    """The fields of a :class:`~repinterp.app.pipeline.FitJob` the command line sets."""
    import torch

    from ..app.loading import parse_pixel_range
    if a.approximate:
        warnings.warn("--approximate does nothing and will be removed: whether boundaries "
                      "are tangent follows from the head", FutureWarning, stacklevel=2)
    return dict(
        model=model or _model_source(a), data=a.data, layer=a.layer, references=a.references,
        size=parse_size(a.size), normalize=a.normalize, strict=a.strict,
        heldout=a.heldout, labels=a.labels, class_names=a.class_names, cache=a.cache,
        pixel_range=parse_pixel_range(a.pixel_range), array=a.npz_array,
        interpreter=dict(num_boundaries=a.num_boundaries, seed=a.seed, device=a.device,
                         progress=not a.quiet, store_dir=a.store_dir,
                         feature_dtype=getattr(torch, a.feature_dtype) if a.feature_dtype
                         else None))


def _engine_fields(a: argparse.Namespace) -> dict:
    return {"engine": a.engine, "workers": a.workers, "ray_address": a.ray_address,
            "ray_wait": a.ray_wait}


def _cmd_demo(a: argparse.Namespace) -> None:
    from ..demo.run import run_demo
    kw = {} if a.num_boundaries is None else {"num_boundaries": a.num_boundaries}
    run_demo(a.out or "out/demo", seed=a.seed, references=a.references,
             coverage=a.coverage, max_regions=a.max_regions, data_root=a.data,
             target_purity=a.target_purity, progress=not a.quiet, retrain=a.retrain, **kw)


def _cmd_explain(a: argparse.Namespace) -> None:
    from ..app.explain import ExplainJob, explain_job
    job = ExplainJob(**_fit_fields(a), query=a.image, out=a.out or "out/explain",
                     seed_index=a.seed_index, summary=a.summary, index=a.index,
                     device=a.device, meta={"seed": a.seed}, **_engine_fields(a))
    print(explain_job(job, _families()).message)


def _cmd_summarize(a: argparse.Namespace) -> None:
    from ..app.index_jobs import summarize_index
    from ..app.pipeline import SummarizeJob, summarize_job
    out = a.out or "out/summary"
    if a.index:
        if a.separate_logics:
            raise UserError("--separate-logics needs the references' features, which an "
                            "index does not keep: summarize --data instead")
        summary, report, n = summarize_index(
            a.index, out, source=_model_source(a), families=_families(),
            coverage=a.coverage, max_regions=a.max_regions, class_names=a.class_names,
            target_purity=a.target_purity, seed=a.seed,
            device=a.device, progress=not a.quiet, **_engine_fields(a))
        print(f"{len(summary.regions)} regions over {len(summary.classes)} classes from an "
              f"index of {n} images; report: {report}")
        return
    job = SummarizeJob(**_fit_fields(a), out=out, coverage=a.coverage,
                       max_regions=a.max_regions, separate_logics=a.separate_logics,
                       target_purity=a.target_purity,
                       max_logics=a.max_logics, meta={"seed": a.seed})
    summary, report = summarize_job(job, _families())
    print(f"{len(summary.regions)} regions over {len(summary.classes)} classes at "
          f"{layer_words(summary.layer)}; report: {report}")


def _cmd_compare(a: argparse.Namespace) -> None:
    from ..app.compare import CompareJob, compare_job
    first, second = model_pair(a)
    job = CompareJob(**_fit_fields(a, first), model_b=second, out=a.out or "out/compare",
                     coverage=a.coverage, max_regions=a.max_regions,
                     target_purity=a.target_purity, min_jaccard=a.min_jaccard,
                     min_share=a.min_share, min_part=a.min_part, meta={"seed": a.seed})
    print(compare_job(job, _families()).message)


def _cmd_index(a: argparse.Namespace) -> None:
    from ..app.index_jobs import IndexJob, index_job
    from ..app.loading import parse_pixel_range
    from ..core.words import plural
    job = IndexJob(model=_model_source(a), data=a.data, out=a.out or "out/index",
                   layer=a.layer, size=parse_size(a.size), normalize=a.normalize,
                   strict=a.strict, pixel_range=parse_pixel_range(a.pixel_range),
                   array=a.npz_array, bank=a.bank, pilot=a.pilot, shard_size=a.shard_size,
                   seed=a.seed, device=a.device, progress=not a.quiet, **_engine_fields(a))
    loaded = index_job(job, _families())
    index = loaded.index
    print(f"indexed {plural(len(index), 'image')} against "
          f"{plural(len(index.bank), 'boundary')} "
          f"({index.nbytes / 2**20:.1f} MiB of rows): {job.out}")


def _cmd_layers(a: argparse.Namespace) -> None:
    from ..app.pipeline import layer_lines
    print("\n".join(layer_lines(_model_source(a), _families(),
                                depth=None if a.depth == 0 else a.depth)))


RAY_ADDRESS = re.compile(r"auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}")

COMMANDS = {"demo": _cmd_demo, "explain": _cmd_explain, "summarize": _cmd_summarize,
            "index": _cmd_index, "layers": _cmd_layers, "compare": _cmd_compare}

# (option, smallest value) of the counts the commands take
_AT_LEAST = [("references", 1), ("num_boundaries", 1), ("max_regions", 1),
             ("max_logics", 1), ("bank", 1), ("pilot", 2), ("shard_size", 1),
             ("workers", 1), ("depth", 0), ("seed_index", 0)]


def _check_counts(a: argparse.Namespace) -> None:
    """Counts and shares in range: a usage error, not a silently odd run."""
    for name, low in _AT_LEAST:
        value = getattr(a, name, None)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if not 0 <= getattr(a, "seed", 0) < 2**63:
        raise UserError(f"--seed must be in 0 .. 2**63 - 1, got {a.seed}")
    address = getattr(a, "ray_address", None)
    if address is not None and not RAY_ADDRESS.fullmatch(address):
        raise UserError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, "
                        f"got {address!r}")
    wait = getattr(a, "ray_wait", None)
    if wait is not None and not 0 < wait < 86400:
        raise UserError(f"--ray-wait must be in (0, 86400) seconds, got {wait}")
    for name in ("coverage", "target_purity"):          # shares, checked before any work
        if (share := getattr(a, name, None)) is not None and not 0 < share <= 1:
            raise UserError(f"--{name.replace('_', '-')} must be in (0, 1], got {share}")


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each on stderr, without the source line."""
    print(f"repinterp: warning: {_one_line(str(message))}", file=sys.stderr)


def _out_of_memory() -> int:
    print("repinterp: error: out of memory: use fewer --references, a smaller --size, "
          "--feature-dtype float16 or --store-dir DIR", file=sys.stderr)
    return 2


def _interrupt(signum, frame) -> None:
    """SIGTERM as SIGINT: the run unwinds, removing what it had half written."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from ..app.outputs import release_locks

    args = build_parser(COMMANDS).parse_args(argv)
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    main_thread = threading.current_thread() is threading.main_thread()
    terminate = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        _check_counts(args)
        with warnings.catch_warnings():          # each command shows its own warnings
            warnings.filterwarnings("default", module="repinterp")
            args.func(args)
        return 0
    except UserError as exc:
        if args.debug:
            raise
        print(f"repinterp: error: {_one_line(exc.render(FLAGS))}", file=sys.stderr)
        return 2
    except MemoryError:
        return _out_of_memory()
    except KeyboardInterrupt:
        print("repinterp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
            return _out_of_memory()          # torch's allocator: a RuntimeError
        print(f"repinterp: internal error: {type(exc).__name__}: "
              f"{_one_line(first_line(exc))} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown
        if main_thread:
            signal.signal(signal.SIGTERM, terminate)
        release_locks()

