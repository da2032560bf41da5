"""Stage `compare`: every seed of both fine-tunes, the linear probes and the pretraining log, summarised.

Per run (init x seed): the test metrics at the epoch with the best validation macro-F1, and convergence:
optimiser steps, epochs and seconds until validation macro-F1 first reaches a threshold common to both inits
(`compare.plateau` x the better init's mean best validation F1, so a run that fails never "converges"
early), and the area under the validation-F1 curve (its mean over epochs). Over seeds: mean, standard
deviation and t interval per init, and pretrained vs scratch as a paired t test (stages/stats.py).

The primary endpoint is test macro-F1 at the validation-selected epoch; every other comparison is
secondary and its p-value is Holm-corrected over the secondary family. Compute-fair: the pretrained run's
time to the threshold plus its share of the pretraining time (`compare.amortise_over` fractions reuse one
pretraining).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from stages import figures
from stages.common import UserError, atomic_path, load_params, param, run_stage, save_json
from stages.data import load_dataset
from stages.stats import holm, mean_ci, paired_t

INITS = ("scratch", "pretrained")  # the finetune matrix in dvc.yaml
FINETUNE = Path("metrics/finetune")
PRETRAIN = Path("metrics/pretrain")
PROBE = Path("metrics/linear_probe.json")
OUT_JSON = Path("metrics/compare.json")
CURVES_CSV = Path("metrics/compare/curves.csv")
PREDICTIONS = {init: Path(f"metrics/compare/predictions_{init}.csv") for init in INITS}
PLOTS = Path("plots")
FIGURES = [PLOTS / name for name in ("curves.png", "pretext.png", "examples.png", "confusion.png")]
HEADLINE = ("f1_macro", "precision_macro", "recall_macro", "accuracy")
PRIMARY = "best_f1_macro"
# the secondary family, Holm-corrected together
SECONDARY = ("best_accuracy", "best_precision_macro", "best_recall_macro", "val_f1_auc",
             "probe_f1_macro", "probe_accuracy")
CURVE_KEYS = ("val/f1_macro", "val/loss", "val/precision_macro", "val/recall_macro", "val/accuracy", "train/loss")


def run_dir(init: str, seed: int) -> Path:
    return FINETUNE / init / f"seed{seed}"


def read_history(live_dir: Path) -> dict[str, np.ndarray]:
    """Every per-step metric a dvclive directory holds, as arrays indexed by step order."""
    root = live_dir / "plots" / "metrics"
    if not root.is_dir():
        raise UserError(f"{root} not found: run the stage that writes {live_dir} first (`dvc repro`)")
    history = {}
    for tsv in sorted(root.rglob("*.tsv")):
        with open(tsv) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        name = tsv.relative_to(root).with_suffix("").as_posix()
        history[name] = np.array([float(r[tsv.stem]) for r in rows])
    return history


def read_summary(live_dir: Path) -> dict:
    path = live_dir / "metrics.json"
    if not path.exists():
        raise UserError(f"{path} not found: run the stage that writes {live_dir} first (`dvc repro`)")
    return json.loads(path.read_text())


def read_predictions(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    index = {c: i for i, c in enumerate(classes)}
    return (np.array([index[r["actual"]] for r in rows]), np.array([index[r["predicted"]] for r in rows]))


def summarise(hist: dict[str, np.ndarray], summary: dict, threshold: float) -> dict:
    """One run's headline metrics and convergence against `threshold` (validation macro-F1)."""
    val_f1 = hist["val/f1_macro"]
    best = int(np.argmax(val_f1))
    reached = np.flatnonzero(val_f1 >= threshold)
    seconds = np.cumsum(hist["epoch_seconds"])
    steps_per_epoch = summary["best"]["steps_per_epoch"]
    first = int(reached[0]) if len(reached) else None
    out = {f"best_{k}": float(hist[f"test/{k}"][best]) for k in HEADLINE}
    out.update({
        "best_epoch": best + 1,
        "best_val_f1_macro": float(val_f1[best]),
        "val_f1_auc": float(val_f1.mean()),
        "epochs_to_threshold": None if first is None else first + 1,
        "steps_to_threshold": None if first is None else (first + 1) * steps_per_epoch,
        "seconds_to_threshold": None if first is None else float(seconds[first]),
        "train_seconds": float(seconds[-1]),
        "wall_seconds": float(summary["best"]["wall_seconds"]),
        "images_per_s": float(np.mean(hist["images_per_s"])),
    })
    return out


def compare_inits(runs: dict[str, list[dict]], keys: tuple[str, ...], confidence: float) -> dict:
    """Per key: mean/std/interval of each init over seeds, and the paired test pretrained - scratch."""
    out = {}
    for key in keys:
        values = {init: [r[key] for r in runs[init]] for init in INITS}
        out[key] = {init: mean_ci(v, confidence) for init, v in values.items()}
        out[key]["difference"] = paired_t(values["pretrained"], values["scratch"], confidence)
    return out


def convergence(runs: list[dict], extra_seconds: float = 0.0) -> dict:
    """Mean steps/epochs/seconds to the threshold over the runs that reached it, and how many did."""
    reached = [r for r in runs if r["steps_to_threshold"] is not None]
    mean = (lambda k: float(np.mean([r[k] for r in reached])) if reached else None)  # noqa: E731
    seconds = mean("seconds_to_threshold")
    return {"runs_reaching": len(reached), "runs": len(runs), "steps": mean("steps_to_threshold"),
            "epochs": mean("epochs_to_threshold"), "seconds": seconds,
            "seconds_with_pretraining": None if seconds is None else seconds + extra_seconds}


def write_curves(histories: dict[str, list[dict[str, np.ndarray]]], path: Path) -> dict[str, list]:
    """Mean over seeds of each per-epoch curve, per init, as one CSV (DVC's top-level plots read it)."""
    epochs = min(len(h["val/f1_macro"]) for runs in histories.values() for h in runs)
    columns = {"epoch": list(range(1, epochs + 1))}
    for init, runs in histories.items():
        for key in CURVE_KEYS:
            columns[f"{init}_{key.replace('/', '_')}"] = np.mean([h[key][:epochs] for h in runs], axis=0).tolist()
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values()))
    return columns


def write_predictions(path: Path, rows: list[tuple[int, str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "actual", "predicted"])
        writer.writerows(rows)


def main() -> None:
    params = load_params()
    seeds = param(params, "seeds")
    plateau = param(params, "compare.plateau")
    confidence = param(params, "compare.confidence")
    amortise = param(params, "compare.amortise_over")

    histories = {init: [read_history(run_dir(init, s)) for s in seeds] for init in INITS}
    summaries = {init: [read_summary(run_dir(init, s)) for s in seeds] for init in INITS}
    threshold = plateau * max(float(np.mean([h["val/f1_macro"].max() for h in histories[init]])) for init in INITS)
    runs = {init: [summarise(h, s, threshold) for h, s in zip(histories[init], summaries[init])] for init in INITS}

    dataset, _ = load_dataset(Path("data/dataset"))
    classes = dataset.classes
    predictions = {init: [read_predictions(run_dir(init, s) / "predictions.csv", classes) for s in seeds]
                   for init in INITS}
    for init in INITS:
        for run, (actual, pred) in zip(runs[init], predictions[init]):
            run["per_class_f1"] = f1_score(actual, pred, labels=np.arange(len(classes)), average=None,
                                           zero_division=0).tolist()

    if not PROBE.exists():
        raise UserError(f"{PROBE} not found: run the linear_probe stage first (`dvc repro`)")
    probe = json.loads(PROBE.read_text())
    for init in INITS:
        by_seed = {r["seed"]: r for r in probe[init]}
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise UserError(f"{PROBE} has no {init} probe for seeds {missing}: re-run `dvc repro`")
        for run, seed in zip(runs[init], seeds):
            run["probe_f1_macro"] = by_seed[seed]["test"]["f1_macro"]
            run["probe_accuracy"] = by_seed[seed]["test"]["accuracy"]

    tests = compare_inits(runs, (PRIMARY, *SECONDARY), confidence)
    adjusted = holm([tests[k]["difference"]["p"] for k in SECONDARY])
    for key, p in zip(SECONDARY, adjusted):
        tests[key]["difference"]["p_holm"] = p
    tests[PRIMARY]["difference"]["p_holm"] = tests[PRIMARY]["difference"]["p"]  # primary: not corrected

    pre = read_history(PRETRAIN)
    pre_summary = read_summary(PRETRAIN)
    pretrain_seconds = float(pre["epoch_seconds"].sum())
    task = {k: pre_summary.get("pretext", {}).get(k) for k in ("task", "metric", "chance")}
    probe_history = pre.get("probe/linear_accuracy", np.array([np.nan]))
    curves = write_curves(histories, CURVES_CSV)
    wall = (pre_summary.get("wall_seconds", 0.0) + probe.get("wall_seconds", 0.0)
            + sum(r["wall_seconds"] for init in INITS for r in runs[init]))
    save_json({
        "seeds": seeds,
        "primary_endpoint": "test macro-F1 at the validation-selected epoch (best_f1_macro)",
        "threshold_val_f1": threshold,
        "runs": runs,
        "tests": tests,
        "convergence": {
            "scratch": convergence(runs["scratch"]),
            "pretrained": convergence(runs["pretrained"], pretrain_seconds / amortise),
            "pretrain_seconds": pretrain_seconds,
            "amortised_over": amortise,
        },
        "per_class_f1": {init: np.mean([r["per_class_f1"] for r in runs[init]], axis=0).tolist() for init in INITS},
        "classes": classes,
        "curves": {k: v for k, v in curves.items() if "val_f1_macro" in k or k == "epoch"},
        "pretext": {
            **task,
            "final_train": float(pre[f"train/pretext_{task['metric']}"][-1]),
            "final_heldout": float(pre[f"val/pretext_{task['metric']}"][-1]),
            # the same network on held-out inputs with one cue removed (see stages/pretexts/base.py)
            "controls": {k.removeprefix("val/control_"): float(v[-1]) for k, v in sorted(pre.items())
                         if k.startswith("val/control_")},
            "probe_random_extractor": float(probe_history[0]),
            "probe_pretrained_extractor": float(probe_history[-1]),
            "train_seconds": pretrain_seconds,
        },
        "labelled_size": summaries["scratch"][0]["best"]["labelled_size"],
        "test_size": int(len(dataset.test_labels)),
        "device": summaries["scratch"][0]["best"]["device"],
        "stage_wall_seconds": wall,
    }, OUT_JSON)

    first_actual = predictions["scratch"][0][0]
    for init in INITS:
        write_predictions(PREDICTIONS[init], [(s, classes[a], classes[p]) for s, (actual, pred) in
                                              zip(seeds, predictions[init]) for a, p in zip(actual, pred)])
    figures.curves(histories, threshold, FIGURES[0])
    figures.pretext(pre, task, FIGURES[1])
    # one test image per class where possible (the first of each), so the grid is the same every run
    picks = [int(np.flatnonzero(first_actual == c)[0]) for c in range(len(classes)) if (first_actual == c).any()][:10]
    figures.examples(dataset.test_images[picks], [classes[first_actual[i]] for i in picks],
                     {init: [classes[predictions[init][0][1][i]] for i in picks] for init in INITS}, FIGURES[2])
    figures.confusions(first_actual, {init: [p for _, p in predictions[init]] for init in INITS}, classes,
                       FIGURES[3])
    d = tests[PRIMARY]["difference"]
    print(f"compare: test macro-F1 over {len(seeds)} seeds: scratch {tests[PRIMARY]['scratch']['mean']:.4f}, "
          f"pretrained {tests[PRIMARY]['pretrained']['mean']:.4f}, paired difference {d['mean']:+.4f}"
          + (f" (p = {d['p']:.3g})" if d["p"] is not None else ""))


if __name__ == "__main__":
    run_stage(main, outputs=[OUT_JSON, CURVES_CSV, *PREDICTIONS.values(), *FIGURES])
