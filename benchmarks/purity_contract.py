"""The purity contract on the model zoo: held-out purity of summaries with and without it.

For each zoo model (:mod:`benchmarks.zoo`, DEV or HELDOUT), the interpreter at the
entry's layer (library defaults: |Q| = 50, coverage 0.9, at most 6 regions per class),
and its summary under each configuration: ``paper`` (``target_purity=None``: the
paper's rule on every reference) and ``contract`` (the default, ``target_purity=0.99``
with the default ladder), plus, with ``--ladders``, other ladders (development only).
Two settings of references:

- ``unseen``: references and evaluation images are the two halves of a seeded
  permutation of the test split (images the model was not trained on, exchangeable
  with each other: the setting the contract is about);
- ``training``: references drawn from the training split (what a user often has), the
  whole test split for evaluation (the model's own generalisation gap included).

Per row: the pooled purity of the regions on the evaluation images (``heldout_figures``:
the images inside a region, counted once per region, predicted as its class) with its
95% Wilson interval, the share of evaluation images inside a region, the contract's own
held-out figure (``Summary.holdout_purity``), regions and seconds.

    python -m benchmarks.purity_contract --split dev --out docs
    python -m benchmarks.purity_contract --split heldout --out docs
"""
from __future__ import annotations

import time

import torch

from benchmarks import harness, zoo
from repinterp import RepresentativeInterpreter
from repinterp.app.stats import heldout_figures
from repinterp.core.contract import EVERY, LEVELS, Level, contract_meta
from repinterp.core.metrics import wilson_interval

#: references per setting (at most; digits' test split has 597 images)
REFERENCES = 5000
#: other ladders tried on the development half (name: levels as boundaries:stop:close,
#: close the most free candidates a level closes with, ``all`` for every one)
LADDERS = {
    "base": "1:auto:0,2:auto:0,4:1.0:0",
    "close1": "1:auto:all",
    "cap8": "1:auto:8,2:auto:8,4:1.0:8",
    "cap16": "1:auto:16,2:auto:16,4:1.0:16",
    "cap32": "1:auto:32,2:auto:32,4:1.0:32",
}


def ladder(text: str) -> tuple[Level, ...]:
    """``"1:auto:all,2:1.0:8"`` -> the levels (boundaries, min_purity, close)."""
    out = []
    for part in text.split(","):
        b, stop, close = part.split(":")
        out.append(Level(int(b), stop if stop == "auto" else float(stop),
                         EVERY if close == "all" else int(close)))
    return tuple(out)


def split_images(zm: zoo.ZooModel, setting: str, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """References and evaluation images of ``setting`` (see the module's docstring)."""
    gen = torch.Generator().manual_seed(seed)
    if setting == "unseen":
        order = torch.randperm(len(zm.test_images), generator=gen)
        half = min(REFERENCES, len(order) // 2)
        return zm.test_images[order[:half]], zm.test_images[order[half:2 * half]]
    order = torch.randperm(len(zm.train_images), generator=gen)
    return zm.train_images[order[:REFERENCES]], zm.test_images


def run(name: str, setting: str, configs: dict[str, tuple[Level, ...] | None],
        seed: int) -> list[dict]:
    zm = zoo.load(name)
    refs, evaluation = split_images(zm, setting, seed)
    interp = RepresentativeInterpreter(zm.model, zm.layer, progress=False, seed=seed)
    interp.fit(refs)
    feats = interp.features(evaluation)
    preds = interp.predict_features(feats)
    rows = []
    for config, levels in configs.items():
        t0 = time.perf_counter()
        summary = interp.summarize(target_purity=None) if levels is None else \
            interp.summarize(ladder=levels)
        seconds = time.perf_counter() - t0
        fig = heldout_figures(summary.regions, feats, preds)
        inside = sum(s.inside for s in fig["stats"])
        agree = round(sum(s.inside * s.purity for s in fig["stats"] if s.purity is not None))
        low, high = wilson_interval(agree, inside) if inside else (None, None)
        row = {"model": name, "split": zm.split, "dataset": zm.dataset, "setting": setting,
               "config": config, "references": len(refs), "evaluation": len(evaluation),
               "regions": len(summary.regions),
               "pooled_purity": None if fig["pooled_purity"] is None
               else round(fig["pooled_purity"], 4),
               "interval": None if low is None else [round(low, 4), round(high, 4)],
               "share_in_a_region": round(fig["share_in_a_region"], 4),
               "contract_holdout_purity": None if summary.holdout_purity is None
               else round(summary.holdout_purity, 4),
               "mean_boundaries": round(sum(r.num_boundaries for r in summary.regions)
                                        / max(len(summary.regions), 1), 1),
               "tangent": bool(interp.approximate_), "seconds": round(seconds, 1)}
        harness.emit(row)
        rows.append(row)
    return rows


def verdict(rows: list[dict], split: str, config: str = "contract",
            target: float = 0.99) -> list[str]:
    """One line per setting: how many models of ``split`` meet ``target``, the lowest
    pooled purity and share in a region, and the models that fall short."""
    out = []
    for setting in ("unseen", "training"):
        part = [r for r in rows if r["split"] == split and r["config"] == config
                and r["setting"] == setting and r["pooled_purity"] is not None]
        if not part:
            continue
        short = [f"{r['model']} {100 * r['pooled_purity']:.2f}%" for r in part
                 if r["pooled_purity"] < target]
        out.append(f"- {setting}: {len(part) - len(short)} of {len(part)} models at >= "
                   f"{100 * target:g}% pooled purity (lowest "
                   f"{100 * min(r['pooled_purity'] for r in part):.2f}%), "
                   f"{100 * min(r['share_in_a_region'] for r in part):.1f}% to "
                   f"{100 * max(r['share_in_a_region'] for r in part):.1f}% of the "
                   "evaluation images in a region"
                   + (f"; short: {', '.join(short)}" if short else ""))
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["# The purity contract on the model zoo", "",
             "Generated by `python -m benchmarks.purity_contract --split dev|heldout "
             "[--ladders] --out docs` from [purity-contract.json](purity-contract.json); "
             "the zoo and its split: [zoo.json](zoo.json) (`benchmarks/zoo.py`). "
             "Configurations: `paper` = `target_purity=None` (every reference counted, "
             "the greedy's purity stop); `contract` = the default (`target_purity=0.99`, "
             "the ladder `1x closed, 2x closed, 4x closed with a strict stop`); on DEV "
             "also `base` (the same ladder, not closed), `close1` (one closed level) and "
             "`cap8`, `cap16`, `cap32` (the ladder, each level closed with at most that "
             "many free candidates, those nearest the seed: smaller regions to store). "
             "The ladder and the closing step were chosen on the DEV half; HELDOUT was "
             "run once, after, and not tuned on (its rows were recomputed with the same "
             "ladder when the boundary counts were added). `boundaries`: the mean number "
             "of boundaries per region (what a saved summary stores, one feature-sized "
             "vector each). Settings: `unseen` = references and "
             "evaluation images are the halves of the test split (the images the "
             "contract is about: like the references, not trained on); `training` = "
             "references from the training split, the test split to evaluate.", ""]
    for split in ("dev", "heldout"):
        if any(r["split"] == split for r in rows):
            lines += [f"The contract on {split.upper()}:", *verdict(rows, split), ""]
    for split in ("dev", "heldout"):
        part = [r for r in rows if r["split"] == split]
        if not part:
            continue
        lines += [f"## {split.upper()}", "",
                  "| model | setting | config | regions | pooled purity | 95% interval | "
                  "share in a region | contract's held-out | boundaries | s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in part:
            iv = "-" if r["interval"] is None else \
                f"{100 * r['interval'][0]:.2f}-{100 * r['interval'][1]:.2f}%"
            pp = "-" if r["pooled_purity"] is None else f"{100 * r['pooled_purity']:.2f}%"
            ch = "-" if r["contract_holdout_purity"] is None else \
                f"{100 * r['contract_holdout_purity']:.2f}%"
            lines.append(f"| {r['model']} | {r['setting']} | {r['config']} | {r['regions']} "
                         f"| {pp} | {iv} | {100 * r['share_in_a_region']:.1f}% | {ch} | "
                         f"{r.get('mean_boundaries', '-')} | {r['seconds']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--split", default="dev", choices=["dev", "heldout"])
    p.add_argument("--only", type=harness.names, default=None)
    p.add_argument("--settings", type=harness.names, default=["unseen", "training"])
    p.add_argument("--ladders", action="store_true",
                   help="also the development ladders (LADDERS)")
    p.add_argument("--configs", type=harness.names, default=None,
                   help="only these configurations (paper, contract, LADDERS' names)")
    harness.add_seed(p)
    harness.add_out(p, help="a folder: purity-contract.json and .md there")
    a = p.parse_args()
    torch.set_num_threads(2)
    configs: dict[str, tuple[Level, ...] | None] = {"paper": None, "contract": LEVELS}
    if a.ladders:
        configs.update({k: ladder(v) for k, v in LADDERS.items()})
    if a.configs:
        configs = {k: ladder(LADDERS[k]) if k in LADDERS else configs[k] for k in a.configs}
    rows = [r for name in (a.only or zoo.names(a.split)) for setting in a.settings
            for r in run(name, setting, configs, a.seed)]
    if a.out:
        path = f"{a.out}/purity-contract.json"
        old = harness.read_results(path, {"rows": []})["rows"]
        done = {(r["model"], r["setting"], r["config"]) for r in rows}
        rows = [r for r in old if (r["model"], r["setting"], r["config"]) not in done] + rows
        rows.sort(key=lambda r: (r["split"] != "dev", r["model"], r["setting"], r["config"]))
        harness.write_results(a.out, "purity-contract.json",
                              {"ladder": contract_meta(1.0, 0.5, LEVELS)["ladder"],
                               "rows": rows},
                              "purity-contract.md", markdown(rows))


if __name__ == "__main__":
    main()
