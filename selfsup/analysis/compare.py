"""What the `compare` stage computes from one experiment's runs (stages/compare.py is its thin main): every
replicate (seed) of both fine-tunes, its linear probes and its pretraining, read from their logs and summarised.

A replicate is one seed: its own split, pretraining and fine-tunes, so the paired test over seeds covers all
three sources of variance. Per run (init x seed) it answers the study's four questions:
- how fast the loss fell: epochs until validation loss first comes within `compare.plateau` of the best
  (lowest) mean minimum of the two inits, and the mean validation loss over epochs;
- how fast the metric rose: the area under the validation macro-F1 curve (its mean over epochs);
- which reached the plateau first: optimiser steps, epochs and seconds until validation macro-F1 first
  reaches a threshold common to both inits (`compare.plateau` x the better init's mean best, so a run that
  fails never "converges" early); compute-fair adds the seed's pretraining seconds shared over
  `compare.amortise_over` fractions;
- the final metrics: the test metrics of the run's last epoch (a fixed budget, no model selection; the one
  test evaluation of the run).
Over seeds: mean, standard deviation and t interval per init, and pretrained vs scratch as a paired t test
(selfsup/analysis/stats.py), p uncorrected here: the report (study/report.py) declares the primary endpoint across the
study and Holm-corrects the rest.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from selfsup.analysis import figures
from selfsup.analysis.endpoints import PRIMARY
from selfsup.analysis.stats import mean_ci, paired_t
from selfsup.core import paths
from selfsup.core.files import atomic_path

INITS = paths.INITS
HEADLINE = ("f1_macro", "precision_macro", "recall_macro", "accuracy")
CURVE_KEYS = ("val/f1_macro", "val/loss", "val/precision_macro", "val/recall_macro", "val/accuracy", "train/loss")


def read_history(live_dir: Path, steps: bool = False) -> dict[str, np.ndarray]:
    """Every per-step metric a dvclive directory holds, as arrays in step order (with `steps`, the steps
    each metric was logged at instead: a pretraining's monitors skip epochs)."""
    root = live_dir / "plots" / "metrics"
    if not root.is_dir():
        raise paths.missing(root)
    history = {}
    for tsv in sorted(root.rglob("*.tsv")):
        with open(tsv) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        name = tsv.relative_to(root).with_suffix("").as_posix()
        history[name] = np.array([float(r["step" if steps else tsv.stem]) for r in rows])
    return history


def read_summary(live_dir: Path) -> dict:
    path = live_dir / "metrics.json"
    if not path.exists():
        raise paths.missing(path)
    return json.loads(path.read_text())


def read_predictions(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    index = {c: i for i, c in enumerate(classes)}
    return (np.array([index[r["actual"]] for r in rows]), np.array([index[r["predicted"]] for r in rows]))


def first_epoch(reached: np.ndarray) -> int | None:
    hits = np.flatnonzero(reached)
    return int(hits[0]) + 1 if len(hits) else None


def summarise(hist: dict[str, np.ndarray], summary: dict, threshold: float, loss_threshold: float) -> dict:
    """One run's four answers: its loss fall and metric rise, when validation macro-F1 reached `threshold`
    (and validation loss `loss_threshold`), and the test metrics of its last epoch."""
    val_f1 = hist["val/f1_macro"]
    seconds = np.cumsum(hist["epoch_seconds"])
    steps_per_epoch = summary["final"]["steps_per_epoch"]
    first = first_epoch(val_f1 >= threshold)
    out = {f"test_{k}": float(summary["final"]["test"][k]) for k in HEADLINE}
    out.update({
        "final_val_f1_macro": float(summary["final"]["val"]["f1_macro"]),
        "val_f1_auc": float(val_f1.mean()),
        "val_loss_mean": float(hist["val/loss"].mean()),
        "epochs_to_loss_threshold": first_epoch(hist["val/loss"] <= loss_threshold),
        "final_train_loss": float(hist["train/loss"][-1]),
        "epochs_to_threshold": first,
        "steps_to_threshold": None if first is None else first * steps_per_epoch,
        "seconds_to_threshold": None if first is None else float(seconds[first - 1]),
        "train_seconds": float(seconds[-1]),
        "wall_seconds": float(summary["final"]["wall_seconds"]),
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


def convergence(runs: list[dict]) -> dict:
    """Mean steps/epochs/seconds to the threshold over the runs that reached it, and how many did; the same
    for the loss threshold; compute-fair seconds add each run's share of its pretraining (0 for scratch)."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return float(np.mean(values)) if values else None
    reached = [r for r in runs if r["steps_to_threshold"] is not None]
    fair = [r["seconds_to_threshold"] + r["pretrain_share_seconds"] for r in reached]
    return {"runs_reaching": len(reached), "runs": len(runs), "steps": mean("steps_to_threshold"),
            "epochs": mean("epochs_to_threshold"), "seconds": mean("seconds_to_threshold"),
            "seconds_with_pretraining": float(np.mean(fair)) if fair else None,
            "runs_reaching_loss": sum(r["epochs_to_loss_threshold"] is not None for r in runs),
            "epochs_to_loss": mean("epochs_to_loss_threshold")}


def write_curves(histories: dict[str, list[dict[str, np.ndarray]]], path: Path) -> dict[str, list]:
    """Mean over seeds of each per-epoch curve, per init. The CSV DVC's top-level plots read is long: one row per
    (epoch, init), so the `inits` template (.dvc/plots/inits.json) tells the inits apart by colour and dash,
    with a legend. Returns the wide columns (`scratch_val_f1_macro`, ...) compare.json keeps."""
    epochs = min(len(h["val/f1_macro"]) for runs in histories.values() for h in runs)
    columns = {"epoch": list(range(1, epochs + 1))}
    for init, runs in histories.items():
        for key in CURVE_KEYS:
            columns[f"{init}_{key.replace('/', '_')}"] = np.mean([h[key][:epochs] for h in runs], axis=0).tolist()
    names = [key.replace("/", "_") for key in CURVE_KEYS]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "init", *names])
        for init in histories:
            for i, epoch in enumerate(columns["epoch"]):
                writer.writerow([epoch, init, *(columns[f"{init}_{n}"][i] for n in names)])
    return columns


def write_predictions(path: Path, rows: list[tuple[int, str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "actual", "predicted"])
        writer.writerows(rows)


def read_pretraining(seed: int) -> tuple[dict[str, np.ndarray], dict]:
    return read_history(paths.pretrain_log(seed)), read_summary(paths.pretrain_log(seed))


def read_probe(seed: int) -> dict:
    path = paths.probe_result(seed)
    if not path.exists():
        raise paths.missing(path)
    return json.loads(path.read_text())


def pretext_summary(pretrainings: list[tuple[dict[str, np.ndarray], dict]]) -> dict:
    """The pretext's final numbers, mean over the seeds' pretrainings."""
    task = {k: pretrainings[0][1].get("pretext", {}).get(k) for k in ("task", "metric", "chance")}

    def mean_last(key: str) -> float:
        return float(np.mean([h[key][-1] for h, _ in pretrainings]))
    first = pretrainings[0][0]
    return {
        **task,
        "final_train": mean_last(f"train/pretext_{task['metric']}"),
        "final_heldout": mean_last(f"val/pretext_{task['metric']}"),
        # the same network on held-out inputs with one cue removed (see selfsup/pretexts/base.py)
        "controls": {k.removeprefix("val/control_"): mean_last(k) for k in sorted(first) if k.startswith("val/control_")},
        "probe_random_extractor": float(np.mean([h["probe/linear_accuracy"][0] for h, _ in pretrainings])),
        "probe_pretrained_extractor": mean_last("probe/linear_accuracy"),
        "train_seconds": [float(h["epoch_seconds"].sum()) for h, _ in pretrainings],
    }


def summary(tests: dict, convergence: dict, pretext: dict, wall_seconds: float) -> dict:
    """The few numbers DVC lists per experiment (`dvc exp show`, `dvc metrics diff`), numbers only: the test
    macro-F1 gain and each init's mean, each init's epochs to the plateau, the probe and pretext numbers and
    the wall time (twelve columns). Everything else (accuracies, the labelled count, every other metric) stays in
    metrics/compare.json, for the reports."""
    def numbers(d: dict) -> dict:
        return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    gain = tests[PRIMARY]["difference"]
    return {
        "test_f1_gain": numbers({"mean": gain["mean"], "ci_low": gain["ci_low"], "ci_high": gain["ci_high"],
                                 "p": gain["p"]}),
        **{init: numbers({"test_f1": tests[PRIMARY][init]["mean"], "plateau_epochs": convergence[init]["epochs"],
                          "probe_f1": tests["probe_f1_macro"][init]["mean"]}) for init in INITS},
        "pretext_heldout": pretext["final_heldout"],  # the task's metric (accuracy; PSNR for reconstruction)
        "wall_minutes": wall_seconds / 60,
    }


def add_seed_results(runs: dict[str, list[dict]], pretrain_seconds: list[float], amortise: float, probes: list[dict],
                     predictions: dict[str, list[tuple[np.ndarray, np.ndarray]]], n_classes: int) -> None:
    """Add to each run what its seed's other stages say: its share of the seed's pretraining seconds (0 for
    scratch), the linear probe of its init, and its per-class test F1."""
    for init in INITS:
        for run, seconds, probe, (actual, pred) in zip(runs[init], pretrain_seconds, probes, predictions[init]):
            run["pretrain_share_seconds"] = seconds / amortise if init == "pretrained" else 0.0
            run["probe_f1_macro"] = probe[init]["test"]["f1_macro"]
            run["probe_accuracy"] = probe[init]["test"]["accuracy"]
            run["knn_f1_macro"] = probe[init]["knn"]["test"]["f1_macro"]
            run["knn_accuracy"] = probe[init]["knn"]["test"]["accuracy"]
            run["per_class_f1"] = f1_score(actual, pred, labels=np.arange(n_classes), average=None,
                                           zero_division=0).tolist()


def draw_figures(histories: dict, threshold: float, pretrainings: list, seeds: list[int], pretext: dict,
                 predictions: dict[str, list[tuple[np.ndarray, np.ndarray]]], test_images: np.ndarray,
                 classes: list[str], out: list[Path]) -> None:
    """The four figures, into `out`: curves, pretext, examples, confusion."""
    figures.curves(histories, threshold, out[0])
    figures.pretext([h for h, _ in pretrainings], [read_history(paths.pretrain_log(s), steps=True) for s in seeds],
                    pretext, out[1])
    # one test image per class where possible (the first of each), so the grid is the same every run
    first_actual = predictions["scratch"][0][0]
    picks = [int(np.flatnonzero(first_actual == c)[0]) for c in range(len(classes)) if (first_actual == c).any()][:10]
    figures.examples(test_images[picks], [classes[first_actual[i]] for i in picks],
                     {init: [classes[predictions[init][0][1][i]] for i in picks] for init in INITS}, out[2])
    figures.confusions(first_actual, {init: [p for _, p in predictions[init]] for init in INITS}, classes,
                       out[3])


def time_shares(summaries: list[dict]) -> dict[str, float] | None:
    """Where the runs' wall time went, mean share per part over the runs (training steps, validation, probes,
    held-out scores, test, checkpoints, logging, other); None for runs made before they recorded it."""
    spent = [s["time"]["shares"] for s in summaries if "time" in s]
    if not spent:
        return None
    parts = sorted({part for shares in spent for part in shares})
    return {part: float(np.mean([shares.get(part, 0.0) for shares in spent])) for part in parts}


def distinct(records: list[dict | None]) -> list[dict | None]:
    """The different numerics records among the runs, in first-seen order (one, when one machine made them all;
    None for a run made before runs recorded them)."""
    out: list[dict | None] = []
    for r in records:
        if r not in out:
            out.append(r)
    return out
