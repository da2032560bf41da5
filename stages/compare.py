"""Stage `compare`: read both fine-tunes and the pretraining log; write metrics/compare.json and figures.

Best epoch = best validation macro-F1; the test metrics reported are those of that one epoch. Plateau =
first epoch whose validation macro-F1 reaches `compare.plateau` x the better run's best validation F1, a
threshold common to both inits (so a run that fails never "plateaus" early).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from stages import figures
from stages.common import UserError, load_params, param, run_stage, save_json
from stages.data import load_dataset

INITS = ("scratch", "pretrained")  # the finetune matrix in dvc.yaml
LIVE = {init: Path(f"metrics/finetune/{init}") for init in INITS}
PRETRAIN = Path("metrics/pretrain")
OUT_JSON = Path("metrics/compare.json")
PLOTS = Path("plots")
FIGURES = [PLOTS / name for name in ("curves.png", "pretext.png", "examples.png", "confusion.png")]
HEADLINE = ("f1_macro", "precision_macro", "recall_macro", "accuracy")


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


def read_predictions(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    index = {c: i for i, c in enumerate(classes)}
    return (np.array([index[r["actual"]] for r in rows]), np.array([index[r["predicted"]] for r in rows]))


def summarise(hist: dict[str, np.ndarray], threshold: float) -> dict:
    best = int(np.argmax(hist["val/f1_macro"]))
    reached = np.flatnonzero(hist["val/f1_macro"] >= threshold)
    seconds = np.cumsum(hist["epoch_seconds"])
    out = {f"best_{k}": float(hist[f"test/{k}"][best]) for k in HEADLINE}
    out.update({
        "best_epoch": best + 1,
        "best_val_f1_macro": float(hist["val/f1_macro"][best]),
        "epochs_to_plateau": int(reached[0] + 1) if len(reached) else None,
        "seconds_to_plateau": float(seconds[reached[0]]) if len(reached) else None,
        "train_seconds": float(seconds[-1]),
        "images_per_s": float(np.mean(hist["images_per_s"])),
    })
    return out


def main() -> None:
    params = load_params()
    plateau = param(params, "compare.plateau", float, low=0, high=1, low_open=True)
    histories = {init: read_history(LIVE[init]) for init in INITS}
    threshold = plateau * max(float(h["val/f1_macro"].max()) for h in histories.values())
    runs = {init: summarise(h, threshold) for init, h in histories.items()}
    difference = {}
    for key, value in runs["pretrained"].items():
        other = runs["scratch"][key]
        difference[key] = None if value is None or other is None else value - other
    pre = read_history(PRETRAIN)
    probe = pre.get("probe/linear_accuracy", np.array([np.nan]))
    save_json({
        "plateau_threshold_val_f1": threshold,
        **runs,
        "pretrained_minus_scratch": difference,
        "pretext": {
            "final_train_accuracy": float(pre["train/pretext_accuracy"][-1]),
            "final_heldout_accuracy": float(pre["val/pretext_accuracy"][-1]),
            "probe_random_extractor": float(probe[0]),
            "probe_pretrained_extractor": float(probe[-1]),
            "train_seconds": float(pre["epoch_seconds"].sum()),
        },
    }, OUT_JSON)

    dataset, _ = load_dataset(Path("data/dataset"))
    classes = dataset.classes
    preds = {}
    for init in INITS:
        actual, preds[init] = read_predictions(LIVE[init] / "predictions.csv", classes)
    figures.curves(histories, threshold, FIGURES[0])
    figures.pretext(pre, FIGURES[1])
    # one test image per class where possible (the first of each), so the grid is the same every run
    picks = [int(np.flatnonzero(actual == c)[0]) for c in range(len(classes)) if (actual == c).any()][:10]
    figures.examples(dataset.test_images[picks], [classes[actual[i]] for i in picks],
                     {init: [classes[p[i]] for i in picks] for init, p in preds.items()}, FIGURES[2])
    figures.confusions(actual, preds, classes, FIGURES[3])
    s, p = runs["scratch"], runs["pretrained"]
    print(f"compare: test macro-F1 at best val epoch: scratch {s['best_f1_macro']:.4f}, "
          f"pretrained {p['best_f1_macro']:.4f} ({difference['best_f1_macro']:+.4f})")


if __name__ == "__main__":
    run_stage(main, outputs=[OUT_JSON, *FIGURES])
