"""Command line: a thin layer over the library.

Exit codes: 0 success, 2 bad input or usage (one line on stderr), 1 internal error
(one line; the traceback only with ``--debug``).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .app.stats import class_name
from .core.errors import UserError, first_line
from .core.words import plural

__all__ = ["main"]

FEATURE_DTYPES = ("float32", "float16", "bfloat16")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo
    kw = {} if args.num_boundaries is None else {"num_boundaries": args.num_boundaries}
    run_demo(args.out or "out/demo", seed=args.seed, references=args.references,
             coverage=args.coverage, max_regions=args.max_regions, data_root=args.data,
             progress=not args.quiet, retrain=args.retrain, **kw)
    return 0


def _inputs(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", help="demo architecture (vgg, resnet), torchvision name (resnet18) "
                   "or timm:NAME (with timm installed; random weights)")
    g.add_argument("--weights", help="state dict for --arch (loaded with weights_only), or "
                   "torchvision weights such as ResNet50_Weights.IMAGENET1K_V2 (from "
                   "torch's hub cache; class names from their metadata)")
    g.add_argument("--num-classes", type=int, default=None, help="classes of --arch")
    g.add_argument("--model", help="TorchScript file, a state dict trained by repinterp, "
                   "or a pickled model with --trust-pickle")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling a whole model (runs code from the file)")
    if not data:
        return
    g.add_argument("--layer", default=None, help="feature layer (see `repinterp layers`)")
    g.add_argument("--approximate", action="store_true",
                   help="no longer needed (kept for old scripts): a smooth head (SiLU, "
                   "GELU, LayerNorm, attention) gets tangent boundaries and its "
                   "regions' fidelity is measured")
    g.add_argument("--device", default=None, help="cpu or cuda")
    g.add_argument("--num-boundaries", type=int, default=50, help="boundaries sampled per "
                   "seed image, |Q| in the paper (default: 50, the paper's)")
    g.add_argument("--feature-dtype", choices=sorted(FEATURE_DTYPES), default=None,
                   help="storage dtype of the reference features (default: the model's)")
    g.add_argument("--store-dir", default=None, help="keep the reference features in a "
                   "memory-mapped file in this directory instead of memory")
    d = p.add_argument_group("images")
    d.add_argument("--data", default=None, help="folder of images (ImageFolder or flat), "
                   ".npy/.npz, IDX file, or a folder of MNIST-style IDX files (required "
                   "except with --index)")
    d.add_argument("--references", type=int, default=None, help="use the first N images")
    d.add_argument("--size", default=None, help="resize to H,W (or one number)")
    d.add_argument("--normalize", default=None, help="imagenet, fashion-mnist, none or "
                   "MEAN,STD (default: imagenet for RGB, none otherwise; fashion-mnist for "
                   "the demo architectures)")
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


def _engine(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help=f"{what}: local (this process) or ray (a local Ray, or the cluster "
                   "of --ray-address)")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: "
                   "the CPUs of this machine)")
    p.add_argument("--ray-address", default=None, help="join a running Ray cluster "
                   "(`ray start --head` prints its address)")


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


def _families() -> dict:
    """The demo's architectures, with their defaults (layer, normalisation, names)."""
    from .app.pipeline import Family
    from .demo.data import FASHION_CLASSES
    from .demo.models import ARCHS, DEMO_LAYERS
    return {name: Family(cls, DEMO_LAYERS[name], "fashion-mnist", FASHION_CLASSES)
            for name, cls in ARCHS.items()}


def _model_source(args: argparse.Namespace):
    from .app.pipeline import ModelSource
    return ModelSource(arch=args.arch, weights=args.weights, num_classes=args.num_classes,
                       model_file=args.model, trust_pickle=args.trust_pickle)


def _model(args: argparse.Namespace):
    """The model and its family (the demo's architectures), or None."""
    from .app.pipeline import open_model
    return open_model(_model_source(args), _families())


def _references(args: argparse.Namespace, model, family):
    """The references (without a fit) and the loading options."""
    from .app.loading import load_images

    if args.data is None:
        raise UserError("--data is required")
    opts = _load_options(args, model, family)
    return load_images(args.data, limit=args.references, **opts), opts


def _load_options(args: argparse.Namespace, model, family) -> dict:
    from .app.pipeline import loading_options
    return loading_options(model, family, size=_parse_size(args.size),
                           normalize=args.normalize, strict=args.strict)


def _fit(args: argparse.Namespace, query: str | None = None):
    """The references of ``--data`` fitted (:func:`repinterp.app.pipeline.fit_job`; the
    ``query`` image read before any work) and the model's family (or None)."""
    from .app.pipeline import FitJob, fit_job

    job = FitJob(model=_model_source(args), data=args.data, layer=args.layer,
                 references=args.references, size=_parse_size(args.size),
                 normalize=args.normalize, strict=args.strict, heldout=args.heldout,
                 labels=getattr(args, "labels", None), class_names=args.class_names,
                 query=query, interpreter=_interpreter_options(args))
    return fit_job(job, _families())


def _interpreter_options(args: argparse.Namespace) -> dict:
    """The interpreter's parameters the command line sets."""
    import torch
    return dict(num_boundaries=args.num_boundaries, seed=args.seed,
                approximate=args.approximate, device=args.device, progress=not args.quiet,
                store_dir=args.store_dir,
                feature_dtype=getattr(torch, args.feature_dtype) if args.feature_dtype
                else None)


def _labels(args: argparse.Namespace, refs, class_names):
    """The labels of the references (``--labels``, else what ``--data`` carries), or
    None."""
    from .app.loading import load_labels
    return load_labels(args.data, refs.names, args.labels, class_names)


def _meta(args: argparse.Namespace, fitted) -> dict:
    return {"model": args.arch or args.model, **fitted.meta(), "seed": args.seed,
            "separate_logics": bool(getattr(args, "separate_logics", False))}


def _cmd_explain(args: argparse.Namespace) -> int:
    from .app.outputs import output_folder
    from .app.report import Query, write_report
    from .core.summary import Summary

    if args.index:
        return _explain_index(args)
    if args.summary:
        return _explain_from_summary(args)
    out = _out(args, "out/explain")
    fitted, _ = _fit(args, query=args.image)
    interp, refs, names = fitted.interp, fitted.references, fitted.class_names
    if fitted.query is not None:
        image = fitted.query.images[0]
        region = interp.explain(image)
        what = Path(args.image).name
    else:
        if args.seed_index >= len(refs.names):
            raise UserError(f"--seed-index {args.seed_index} is out of range: there are "
                            f"{len(refs.names)} reference images")
        image = refs.images[args.seed_index]
        region = interp.explain(args.seed_index)
        what = refs.names[args.seed_index]
    stats = fitted.heldout_stats([region])
    summary = Summary.of_region(region, interp.predictions_, layer=interp.layer_)
    labels = _labels(args, refs, names)
    cname = class_name(names, region.predicted_class)
    with output_folder(out) as tmp:
        write_report(tmp, summary, refs.images, heatmap=interp.heatmap, stats=stats,
                     reference_heatmap=interp.reference_heatmap, names=refs.names,
                     query=Query(image, what, region.predicted_class), class_names=names,
                     labels=labels, predictions=interp.predictions_,
                     title=f"repinterp: why {what} is {cname}", meta=_meta(args, fitted))
    print(f"region of {what} ({cname}): {plural(region.size, 'member')}, "
          f"{plural(region.num_boundaries, 'boundary')}, delta {region.delta}; "
          f"report: {out / 'report.html'}")
    return 0


def _explain_from_summary(args: argparse.Namespace) -> int:
    """``explain --summary DIR --image FILE``: the region of a saved summary that the image
    falls in (or the nearest of its class), without refitting."""
    from .app.io import load_summary
    from .app.loading import checked_path, load_images
    from .app.outputs import output_folder
    from .app.pipeline import check_summary_source, class_names_for, locate_image
    from .app.report import Query, write_report

    if not args.image:
        raise UserError("explain --summary needs --image FILE")
    checked_path(args.image, kind="file", what="--image")
    summary = load_summary(args.summary)
    out = _out(args, "out/explain")
    model, family = _model(args)
    opts = _load_options(args, model, family)
    image = load_images(args.image, **opts).images[0]
    refs, _ = _references(args, model, family)
    check_summary_source(summary, model, refs.images, args.summary)
    located = locate_image(summary, model, image, device=args.device)
    where, pred, net = located.position, located.predicted, located.network
    names = class_names_for(args.class_names, args.weights, family, data=args.data,
                            classes=located.classes,
                            saved=summary.meta.get("class_names"))
    cname = class_name(names, pred)
    if where < 0:
        print(f"{args.image} (predicted {cname}): the summary has no region of {cname}")
        return 0
    region = summary.regions[where]
    method = summary.meta.get("heatmap_method", "margin")
    verdict = (f"falls in region {where + 1} of the summary" if located.inside else
               f"falls in no region of {cname}; the nearest is region {where + 1} "
               f"(wrong side of {located.violated} of its "
               f"{plural(region.num_boundaries, 'boundary')})")
    with output_folder(out) as tmp:
        write_report(tmp, summary.one_region(where), refs.images,
                     heatmap=lambda r, imgs: net.heatmap(r, imgs, method),
                     names=refs.names, numbers=[where + 1], class_names=names,
                     query=Query(image, Path(args.image).name, pred, 0, located.inside,
                                 located.violated),
                     title=f"repinterp: where {Path(args.image).name} falls",
                     meta={"image": args.image, "summary": str(args.summary),
                           "layer": summary.layer})
    print(f"{args.image} (predicted {cname}) {verdict}: {plural(region.size, 'member')}; "
          f"report: {out / 'report.html'}")
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from .app.pipeline import SummarizeJob, summarize_index, summarize_job

    # the command line's values first; then one call into the pipeline
    source, families = _model_source(args), _families()
    size, interpreter = _parse_size(args.size), _interpreter_options(args)
    if args.index:
        if args.separate_logics:
            raise UserError("--separate-logics needs the references' features, which an "
                            "index does not keep: summarize --data instead")
        summary, report, n = summarize_index(
            args.index, args.out or "out/summary", source=source, families=families,
            coverage=args.coverage, max_regions=args.max_regions,
            class_names=args.class_names, device=args.device, progress=not args.quiet,
            **_engine_options(args))
        print(f"{len(summary.regions)} regions over {len(summary.classes)} classes from an "
              f"index of {n} images; report: {report}")
        return 0
    job = SummarizeJob(
        model=source, data=args.data, out=args.out or "out/summary", layer=args.layer,
        references=args.references, size=size, normalize=args.normalize,
        strict=args.strict, heldout=args.heldout, labels=args.labels,
        class_names=args.class_names, coverage=args.coverage, max_regions=args.max_regions,
        separate_logics=args.separate_logics, max_logics=args.max_logics,
        interpreter=interpreter, meta={"seed": args.seed})
    summary, report = summarize_job(job, families)
    print(f"{len(summary.regions)} regions over {len(summary.classes)} classes; "
          f"report: {report}")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from .core.split import layer_table, suggest_layer

    model, _ = _model(args)
    depth = None if args.depth == 0 else args.depth
    rows = layer_table(model, max_depth=depth)
    best = suggest_layer(model, rows)
    hidden = sum(1 for name, _ in model.named_modules() if name) - len(rows)
    width = max(len(r.name) for r in rows) if rows else 10
    print(f"  {'layer':{width}}  {'type':18}  head after it")
    for r in rows:
        mark = "*" if r.name == best else " "
        print(f"{mark} {r.name:{width}}  {r.type:18}  {r.describe()}")
    if hidden:
        print(f"({hidden} deeper layers not listed: --depth {(depth or 0) + 1} or --depth 0 "
              "for all)")
    print(f"suggested layer: {best}" if best else
          "no layer to suggest: no block leaves a head with a kink or a smooth head; "
          "give --layer (see the verdicts above)")
    return 0


def _model_spec(args: argparse.Namespace) -> dict:
    """The model options as the index manifest records them (absolute paths)."""
    def absolute(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p and Path(p).exists() else p
    return {"arch": args.arch, "weights": absolute(args.weights),
            "num_classes": args.num_classes, "model_file": absolute(args.model)}


def _cmd_index(args: argparse.Namespace) -> int:
    import functools

    from .app.index import build_index, load_index
    from .app.loading import ImageSource, check_feature_map, load_model
    from .app.pipeline import layer_for
    from .core.split import resolve_layer
    from .demo.models import ARCHS

    model, family = _model(args)
    layer = layer_for(args.layer, family)
    if args.data is None:
        raise UserError("--data is required")
    source = ImageSource(str(Path(args.data).resolve()), **_load_options(args, model, family))
    first = source.read(0, min(len(source), 64))[0]
    if len(first):
        check_feature_map(model, resolve_layer(model, layer), first[0])
    spec = _model_spec(args)
    out = build_index(model, layer, source, args.out or "out/index", bank=args.bank,
                      pilot=args.pilot, seed=args.seed, shard_size=args.shard_size,
                      engine=args.engine, workers=args.workers, ray_address=args.ray_address,
                      load_model=functools.partial(load_model, archs=ARCHS,
                                                   trust_pickle=args.trust_pickle, **spec),
                      model_description=spec, device=args.device,
                      progress=not args.quiet)
    index = load_index(out).index
    print(f"indexed {plural(len(index), 'image')} against "
          f"{plural(len(index.bank), 'boundary')} "
          f"({index.nbytes / 2**20:.1f} MiB of rows): {out}")
    return 0


def _explain_index(args: argparse.Namespace) -> int:
    from .app.loading import checked_path
    from .app.pipeline import open_index

    if not args.image:
        raise UserError("explain --index needs --image FILE")
    checked_path(args.image, kind="file", what="--image")
    out = _out(args, "out/explain")
    loaded, model, family = open_index(args.index, _model_source(args), _families(),
                                       **_engine_options(args))
    try:
        return _explain_loaded(args, loaded, model, family, out)
    finally:
        loaded.close()


def _engine_options(args: argparse.Namespace) -> dict:
    import os
    return {"engine": args.engine, "workers": args.workers or os.cpu_count() or 1,
            "ray_address": args.ray_address}


def _explain_loaded(args: argparse.Namespace, loaded, model, family, out: Path) -> int:
    from .app.loading import load_images
    from .app.outputs import output_folder
    from .app.pipeline import class_names_for
    from .app.report import Query, write_report
    from .core.index import IndexWorker
    from .core.summary import Summary

    index, names = loaded.index, loaded.names
    opts = {k: loaded.manifest["data"][k] for k in ("channels", "size", "normalize")}
    image = load_images(args.image, **opts).images[0]
    worker = IndexWorker(model, index.layer, index.bank, device=args.device)
    worker.network.check_split(image[None])
    region = index.explain(worker.rows(image[None]))
    net = worker.network
    cls = region.predicted_class
    labels = class_names_for(args.class_names, args.weights, family,
                             data=loaded.manifest["data"].get("path"),
                             classes=loaded.manifest["classes"])
    summary = Summary.single(region, int(index.class_counts()[cls]), layer=index.layer)
    cname = class_name(labels, cls)
    with output_folder(out) as tmp:
        write_report(tmp, summary, loaded.images(),
                     heatmap=net.heatmap, names=names,
                     query=Query(image, Path(args.image).name, cls), class_names=labels,
                     title=f"repinterp: why {Path(args.image).name} is {cname} (index)",
                     meta={"image": args.image, "index": str(args.index),
                           "layer": index.layer})
    closest = ", ".join(names[int(i)] for i in region.members[:5])
    print(f"{args.image} ({cname}): region of {plural(region.size, 'indexed image')}, "
          f"{plural(region.num_boundaries, 'boundary')}; closest: {closest}; "
          f"report: {out / 'report.html'}")
    return 0


def _out(args: argparse.Namespace, default: str) -> Path:
    """The output folder, checked before any work (an existing file, a folder of other
    files, or a place that cannot be written is an error now, not after the fit)."""
    from .app.outputs import check_output
    out = Path(args.out or default)
    check_output(out, [getattr(args, name, None) for name in _INPUTS])
    return out


# the options that name files or folders a command reads
_INPUTS = ("data", "image", "summary", "index", "model", "weights", "labels", "class_names",
           "heldout")


# (option, smallest value) of the counts the commands take
_AT_LEAST = [("references", 1), ("num_boundaries", 1), ("max_regions", 1),
             ("max_logics", 1), ("bank", 1), ("pilot", 2), ("shard_size", 1),
             ("workers", 1), ("depth", 0), ("seed_index", 0)]


def _check_counts(args: argparse.Namespace) -> None:
    """Counts and shares in range: a usage error, not a silently odd run."""
    for name, low in _AT_LEAST:
        value = getattr(args, name, None)
        if value is not None and value < low:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be at least {low}, got {value}")
    coverage = getattr(args, "coverage", None)
    if coverage is not None and not 0 < coverage <= 1:
        raise UserError(f"--coverage must be in (0, 1], got {coverage}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each on stderr, without the source line."""
    print(f"repinterp: warning: {_one_line(str(message))}", file=sys.stderr)


# the library's errors name its arguments; on the command line they are flags
_FLAGS = [
    ("arch=NAME (with weights=FILE) or model_file=FILE",
     "--arch NAME [--weights FILE] or --model FILE"),
    ("model_file=FILE with trust_pickle=True", "--model FILE --trust-pickle"),
    ("arch=NAME with weights=FILE", "--arch NAME --weights FILE"),
    ("trust_pickle=True", "--trust-pickle"),
    ("size=(H, W)", "--size H,W"),
    ("normalize must be", "--normalize must be"),
    ("check arch and num_classes", "check --arch and --num-classes"),
    ("(pass class_names)", "(pass --class-names)"),
    ("engine='ray'", "--engine ray"),
    ("a larger pilot or bank", "a larger --pilot or --bank"),
    ("model_file=FILE", "--model FILE"),
    ("a layer is required", "--layer is required"),
    ("data is required", "--data is required"),
]


def _as_flags(message: str) -> str:
    """A library error in the command line's words (its flags for the API's arguments)."""
    for api, flag in _FLAGS:
        message = message.replace(api, flag)
    return message


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repinterp",
        description="Representative interpretations of CNN classifiers (ICCV 2021).")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"repinterp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="summarise the built-in Fashion-MNIST CNN into a report")
    _common(p)
    p.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--references", type=int, default=10000, help="training images used")
    p.add_argument("--coverage", type=float, default=0.9, help="share of each class to cover")
    p.add_argument("--max-regions", type=int, default=6, help="regions per class at most")
    p.add_argument("--num-boundaries", type=int, default=None,
                   help="boundaries sampled per seed (default: the demo's, see the README)")
    p.add_argument("--retrain", action="store_true", help="train the demo CNN again "
                   "instead of using the weights shipped with repinterp (about 4 minutes "
                   "on 2 CPU cores)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("explain", help="the region of one seed image")
    _common(p)
    _inputs(p)
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed-index", type=int, default=0, help="index of the seed image")
    seed.add_argument("--image", default=None, help="an outside image file as the seed")
    p.add_argument("--summary", default=None, help="with --image: a summary directory "
                   "(or its summary.pt) to locate the image in, without refitting")
    p.add_argument("--index", default=None, help="with --image: a region index "
                   "(`repinterp index`): the image's region and closest indexed images")
    _engine(p, "with --index, where the greedy runs over the index's rows")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("summarize", help="peel every predicted class into regions")
    _common(p)
    _inputs(p)
    p.add_argument("--coverage", type=float, default=0.9, help="share of each class to cover")
    p.add_argument("--max-regions", type=int, default=6, help="regions per class at most")
    p.add_argument("--index", default=None, help="summarise a region index "
                   "(`repinterp index`) instead of fitting on --data")
    p.add_argument("--separate-logics", action="store_true", help="split each class by "
                   "the decision logic its images are predicted by (local linear models) "
                   "before peeling it into regions: finds groups predicted for a different "
                   "reason, e.g. a watermark")
    p.add_argument("--max-logics", type=int, default=4, help="logics per class at most "
                   "(with --separate-logics)")
    _engine(p, "with --index, where the greedy runs over the index's rows")
    p.set_defaults(func=_cmd_summarize)

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
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("layers", help="candidate layers, the verdict on the head after "
                       "each, and a suggestion")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--depth", type=int, default=3, help="list layers down to this many "
                   "levels (1: the model's children; 0: all); each costs one trace")
    _inputs(p, data=False)
    p.set_defaults(func=_cmd_layers)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    from .app.outputs import release_locks

    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    main_thread = threading.current_thread() is threading.main_thread()
    terminate = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        _check_counts(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"repinterp: error: {_one_line(_as_flags(str(exc)))}", file=sys.stderr)
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
    finally:
        warnings.showwarning = shown
        if main_thread:
            signal.signal(signal.SIGTERM, terminate)
        release_locks()


def _interrupt(signum, frame) -> None:
    """SIGTERM as SIGINT: the run unwinds, removing what it had half written."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
