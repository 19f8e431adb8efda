"""The paper's protocol on the demo models, written under ``docs/`` (``make evaluate``):

    python -m benchmarks.evaluate --out docs [--quick]


Seeds are reference indices drawn from one permutation: the first ``dev_seeds`` choose
the default heat map (on the first architecture only), the next ``seeds`` are reported.
The two sets never overlap, so no reported number was tuned on.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.protocol import CAM_METHODS, KS, EvalResult, evaluate_seeds
from repinterp import RepresentativeInterpreter
from repinterp.app.outputs import write_bytes
from repinterp.core.heatmap import METHODS as HEATMAPS
from repinterp.core.metrics import paired_ci
from repinterp.demo.models import DEMO_LAYERS


def choose_heatmap(res: EvalResult) -> str:
    """The variant with the lowest mAD averaged over k; ties go to the higher mAI."""
    table = res.table()
    scores = {hm: (np.mean([table[f"RI ({hm})"][k][0] for k in res.ks]),
                   -np.mean([table[f"RI ({hm})"][k][1] for k in res.ks]))
              for hm in HEATMAPS if f"RI ({hm})" in table}
    return min(scores, key=scores.get)


def _tables(res: EvalResult) -> str:
    t = res.table()
    head = "| method | " + " | ".join(f"mAD@{k}" for k in res.ks) + " | " + \
        " | ".join(f"mAI@{k}" for k in res.ks) + " |\n"
    head += "|---" * (1 + 2 * len(res.ks)) + "|\n"
    rows = "".join(f"| {r} | " + " | ".join(f"{t[r][k][0]:.1f}" for k in res.ks) + " | "
                   + " | ".join(f"{t[r][k][1]:.1f}" for k in res.ks) + " |\n" for r in t)
    return head + rows


def _comparisons(res: EvalResult, ri_row: str) -> tuple[str, dict]:
    lines = ["| baseline | k | mAD difference (RI - baseline) [95% CI] | "
             "mAI difference [95% CI] | RI wins both |", "|---|---|---|---|---|"]
    data = {}
    for cam in CAM_METHODS:
        row = f"{cam} (reused)"
        for k in res.ks:
            ad = paired_ci(res.ad[ri_row][k], res.ad[row][k])
            ai = paired_ci(res.ai[ri_row][k], res.ai[row][k])
            wins = ad[2] < 0 and ai[1] > 0
            data[f"{cam}@{k}"] = {"ad_diff": ad, "ai_diff": ai, "significant_win": wins}
            lines.append(f"| {cam} | {k} | {100 * ad[0]:+.1f} [{100 * ad[1]:+.1f}, "
                         f"{100 * ad[2]:+.1f}] | {100 * ai[0]:+.1f} [{100 * ai[1]:+.1f}, "
                         f"{100 * ai[2]:+.1f}] | {'yes' if wins else 'no'} |")
    return "\n".join(lines) + "\n", data


def _plot(res: EvalResult, rows: list[str], title: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = res.table()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        axes[0].plot(res.ks, [t[r][k][0] for k in res.ks], marker="o", label=r)
        axes[1].plot(res.ks, [t[r][k][1] for k in res.ks], marker="o", label=r)
    for ax, name in zip(axes, ["mAD (%) - lower is better", "mAI (%) - higher is better"],
                        strict=True):
        ax.set_xlabel("k (retrieved unseen images)")
        ax.set_title(name)
        ax.set_xticks(res.ks)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _serialise(res: EvalResult) -> dict:
    return {"seeds": res.seeds, "ks": list(res.ks),
            "table": {r: {str(k): v for k, v in d.items()} for r, d in res.table().items()},
            "per_seed_ad": {r: {str(k): [None if np.isnan(v) else float(v) for v in a]
                                for k, a in d.items()} for r, d in res.ad.items()},
            "per_seed_ai": {r: {str(k): [None if np.isnan(v) else float(v) for v in a]
                                for k, a in d.items()} for r, d in res.ai.items()},
            "ri_retrieved": res.retrieved["RI"].tolist()}


def run_evaluation(out: str | Path = "docs", *, quick: bool = False, seed: int = 0,
                   archs: tuple[str, ...] = ("vgg", "resnet"), data_root: str | None = None,
                   progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the protocol on each demo architecture and write ``evaluation.json``,
    ``evaluation-results.md`` and one plot per architecture into ``out``."""
    start = time.perf_counter()
    n_refs, n_dev, n_seeds = (3000, 8, 20) if quick else (10000, 40, 150)
    if quick:
        archs = archs[:1]
    x_train, x_test = harness.fashion(data_root)
    refs = harness.draw(x_train, n_refs, seed)
    dev, report = harness.reported_seeds(n_refs, n_dev, n_seeds, seed)
    out = Path(out)
    results: dict = {"settings": {"references": n_refs, "dev_seeds": n_dev, "seeds": n_seeds,
                                  "ks": list(KS), "keep": 0.2, "num_boundaries": 50,
                                  "mask_value": "0 in normalised input space (dataset mean)",
                                  "quick": quick, "seed": seed}, "models": {}}
    md = ["# Evaluation results (generated)\n",
          f"Command: `python -m benchmarks.evaluate{' --quick' if quick else ''} --out {out}`. "
          f"{n_refs} reference images (training split), unseen images: the 10,000 test "
          f"images, {n_dev} development seeds (choose the heat map), {n_seeds} reported "
          "seeds (disjoint). Numbers are percentages.\n"]
    default = None
    for arch in archs:
        model, meta = harness.demo_model(arch, data_root=data_root, progress=progress)
        interp = RepresentativeInterpreter(model, DEMO_LAYERS[arch], seed=seed,
                                           progress=progress).fit(refs)
        if default is None:
            log(f"{arch}: choosing the heat map on {n_dev} development seeds")
            dev_res = evaluate_seeds(interp, refs, x_test, dev, heatmaps=HEATMAPS,
                                     cams=CAM_METHODS, extra_rows=False, progress=progress)
            default = choose_heatmap(dev_res)
            results["development"] = _serialise(dev_res)
            results["default_heatmap"] = default
            md += [f"## Development seeds ({arch})\n", _tables(dev_res),
                   f"\nChosen default heat map: **{default}** (lowest mAD averaged over k).\n"]
        log(f"{arch}: {n_seeds} reported seeds")
        res = evaluate_seeds(interp, refs, x_test, report, heatmaps=HEATMAPS,
                             progress=progress)
        ri_row = f"RI ({default})"
        comp_md, comp = _comparisons(res, ri_row)
        results["models"][arch] = dict(_serialise(res), comparisons=comp, layer=interp.layer_,
                                       test_accuracy=meta["test_accuracy"])
        rows = [ri_row, *(f"{c} (reused)" for c in CAM_METHODS),
                "RI retrieval + Grad-CAM++ (reused)", "own Grad-CAM++ (RI retrieval)"]
        plot = f"evaluation-{arch}{'-quick' if quick else ''}.png"
        write_bytes(out / plot, _plot(res, rows, f"{arch} (test acc "
                                      f"{100 * meta['test_accuracy']:.1f}%), split at "
                                      f"{interp.layer_}, {n_seeds} seeds"))
        md += [f"## {arch}, split at `{interp.layer_}`, test accuracy "
               f"{100 * meta['test_accuracy']:.2f}%, {n_seeds} reported seeds\n",
               _tables(res), f"\nPaired differences over seeds, RI = `{ri_row}`, 95% "
               "bootstrap CI (10,000 resamples):\n\n", comp_md,
               f"\nRI retrieved fewer than 50 unseen images for "
               f"{int((res.retrieved['RI'] < 50).sum())} of {n_seeds} seeds.\n\n"
               f"![{arch}]({plot})\n"]
    results["seconds"] = round(time.perf_counter() - start, 1)
    md.append(f"\nWall time: {results['seconds']} s on this machine.\n")
    suffix = "-quick" if quick else ""
    harness.write_results(out, f"evaluation{suffix}.json", results,
                          f"evaluation-results{suffix}.md", "\n".join(md))
    log(f"wrote {out / f'evaluation-results{suffix}.md'} in {results['seconds']} s")
    return results


if __name__ == "__main__":
    parser = harness.parser(__doc__)
    harness.add_out(parser, "docs")
    parser.add_argument("--quick", action="store_true", help="one model, 20 seeds")
    harness.add_seed(parser)
    parser.add_argument("--archs", default="vgg,resnet", type=harness.names)
    parser.add_argument("--data", default=None, help="Fashion-MNIST IDX directory")
    harness.add_quiet(parser)
    a = parser.parse_args()
    run_evaluation(a.out, quick=a.quick, seed=a.seed, archs=tuple(a.archs),
                   data_root=a.data, progress=not a.quiet)
