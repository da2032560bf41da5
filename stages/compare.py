"""Stage `compare`: every replicate (seed) of both fine-tunes, its linear probes and its pretraining, summarised
(selfsup/analysis/compare.py says what is computed and why); writes metrics/compare.json, the DVC metrics file
metrics/summary.json, the curves and predictions DVC plots, and the four figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.analysis.compare import (INITS, add_seed_results, compare_inits, convergence, distinct, draw_figures,
                                      pretext_summary, read_history, read_predictions, read_pretraining, read_probe,
                                      read_summary, summarise, summary, time_shares, write_curves, write_predictions)
from selfsup.analysis.endpoints import PRIMARY, SECONDARY
from selfsup.core import paths
from selfsup.core.dataset import load_dataset
from selfsup.core.files import save_json
from selfsup.core.params import load_params, param
from selfsup.stage import run_stage

OUT_JSON = Path("metrics/compare.json")
SUMMARY_JSON = Path("metrics/summary.json")  # the stage's one DVC metrics file: what `dvc exp show` lists
CURVES_CSV = Path("metrics/compare/curves.csv")
PREDICTIONS = {init: Path(f"metrics/compare/predictions_{init}.csv") for init in INITS}
PLOTS = Path("plots")
FIGURES = [PLOTS / name for name in ("curves.png", "pretext.png", "examples.png", "confusion.png")]


def main() -> None:
    params = load_params()
    seeds = param(params, "seeds")
    plateau = param(params, "compare.plateau")
    confidence = param(params, "compare.confidence")
    amortise = param(params, "compare.amortise_over")

    histories = {init: [read_history(paths.finetune_log(init, s)) for s in seeds] for init in INITS}
    summaries = {init: [read_summary(paths.finetune_log(init, s)) for s in seeds] for init in INITS}
    threshold = plateau * max(float(np.mean([h["val/f1_macro"].max() for h in histories[init]])) for init in INITS)
    loss_threshold = min(float(np.mean([h["val/loss"].min() for h in histories[init]])) for init in INITS) / plateau
    runs = {init: [summarise(h, s, threshold, loss_threshold) for h, s in zip(histories[init], summaries[init])]
            for init in INITS}
    pretrainings = [read_pretraining(s) for s in seeds]
    pretext = pretext_summary(pretrainings)
    probes = [read_probe(s) for s in seeds]
    dataset, _ = load_dataset(paths.DATASET)
    classes = dataset.classes
    predictions = {init: [read_predictions(paths.finetune_log(init, s) / "predictions.csv", classes) for s in seeds]
                   for init in INITS}
    add_seed_results(runs, pretext["train_seconds"], amortise, probes, predictions, len(classes))

    tests = compare_inits(runs, (PRIMARY, *SECONDARY, "val_loss_mean", "knn_f1_macro"), confidence)
    converged = {init: convergence(runs[init]) for init in INITS}
    curves = write_curves(histories, CURVES_CSV)
    wall = (sum(s.get("wall_seconds", 0.0) for _, s in pretrainings) + sum(p["wall_seconds"] for p in probes)
            + sum(r["wall_seconds"] for init in INITS for r in runs[init]))
    save_json({
        "seeds": seeds,
        "primary_metric": "test macro-F1 after the last epoch of the fixed budget (test_f1_macro)",
        "threshold_val_f1": threshold,
        "threshold_val_loss": loss_threshold,
        "runs": runs,
        "tests": tests,
        "convergence": converged | {"amortised_over": amortise},
        "per_class_f1": {init: np.mean([r["per_class_f1"] for r in runs[init]], axis=0).tolist() for init in INITS},
        "classes": classes,
        "curves": {k: v for k, v in curves.items() if "val_f1_macro" in k or k == "epoch"},
        "pretext": pretext,
        "labelled_size": summaries["scratch"][0]["final"]["labelled_size"],
        "test_size": int(len(dataset.test_labels)),
        "device": summaries["scratch"][0]["final"]["device"],
        "time_shares": {"pretrain": time_shares([s for _, s in pretrainings]),
                        "finetune": time_shares([s for init in INITS for s in summaries[init]])},
        "numerics": {"finetune": distinct([s["final"].get("numerics") for init in INITS for s in summaries[init]]),
                     "pretrain": distinct([s.get("numerics") for _, s in pretrainings]),
                     "linear_probe": distinct([p.get("numerics") for p in probes])},
        "pretrain_wall_seconds": sum(s.get("wall_seconds", 0.0) for _, s in pretrainings),
        "stage_wall_seconds": wall,
    }, OUT_JSON)
    save_json(summary(tests, converged, pretext, wall), SUMMARY_JSON)

    for init in INITS:
        write_predictions(PREDICTIONS[init], [(s, classes[a], classes[p]) for s, (actual, pred) in
                                              zip(seeds, predictions[init]) for a, p in zip(actual, pred)])
    draw_figures(histories, threshold, pretrainings, seeds, pretext, predictions, dataset.test_images, classes,
                 FIGURES)
    d = tests[PRIMARY]["difference"]
    print(f"compare: test macro-F1 over {len(seeds)} seeds: scratch {tests[PRIMARY]['scratch']['mean']:.4f}, "
          f"pretrained {tests[PRIMARY]['pretrained']['mean']:.4f}, paired difference {d['mean']:+.4f}"
          + (f" (p = {d['p']:.3g}, uncorrected)" if d["p"] is not None else ""))


if __name__ == "__main__":
    run_stage(main, outputs=[OUT_JSON, SUMMARY_JSON, CURVES_CSV, *PREDICTIONS.values(), *FIGURES])
