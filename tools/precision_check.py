"""Do bf16 and fp32 train to the same place? The study's own fine-tune, same seed, in each precision.

    python -m tools.precision_check --fraction 0.1 --seed 0 --epochs 3 --json bench/precision-check.json

Runs the fine-tune params.yaml declares (`model`, `finetune`; selfsup.finetune, the routine the
`finetune@scratch` stage runs) on the seed's split of a dataset written by the download stage, for `--epochs`
epochs, once per precision in `--precisions`, from the same seed (same initial weights, same batches, same
augmentation), scoring validation macro-F1 after every epoch. Prints and writes each run's figures and the
largest difference of the last epoch's. Not a stage and not a test (the test on tiny data is in
tests/test_engine.py). Test images are never read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selfsup.core.dataset import load_dataset
from selfsup.core.params import PRECISIONS, load_params, param
from selfsup.finetune import FineTune
from selfsup.loop.training_stage import TrainingStage, stage_precision
from selfsup.subsets import split_indices
from selfsup.training.devices import configure_device, resolve_device
from selfsup.training.distributed import Dist
from study.markdown import first_paragraph


def run(args: argparse.Namespace, precision: str) -> dict:
    params = load_params()
    device = configure_device(resolve_device(args.device))
    dataset, meta = load_dataset(Path(args.dataset))
    validation, labelled = split_indices(dataset.train_labels, args.seed, param(params, "split.val_fraction"),
                                         args.fraction)
    stage = TrainingStage(params, Dist(), device, stage_precision(params | {"precision": precision}, device),
                          time.perf_counter())
    ft = FineTune.from_stage(stage, dataset, meta, labelled, validation, "scratch", args.seed, None, args.epochs,
                             test=False)
    f1s, seconds = [], 0.0
    for epoch in range(args.epochs):
        stats = ft.train_epoch(f"{precision} {epoch + 1}/{args.epochs}")
        seconds += stats["seconds"]
        f1s.append(ft.validate()["f1_macro"])
        print(f"{precision} epoch {epoch + 1}: validation macro-F1 {f1s[-1]:.4f}", flush=True)
    images = args.epochs * ft.steps * min(ft.setup.recipe.batch_size, len(labelled))
    return {"val_f1_macro": f1s, "train_seconds": seconds, "images_per_s": images / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--dataset", default="data/dataset")
    parser.add_argument("--fraction", type=float, default=0.1, help="label fraction whose split is fine-tuned on")
    parser.add_argument("--epochs", type=int, default=3, help="budget, in passes over the 100 %% labelled pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--json")
    args = parser.parse_args()
    start = time.perf_counter()
    report = {"args": vars(args), "runs": {p: run(args, p) for p in args.precisions}}
    finals = [r["val_f1_macro"][-1] for r in report["runs"].values()]
    report["final_f1_difference"] = max(finals) - min(finals)
    report["wall_seconds"] = time.perf_counter() - start
    print("final validation macro-F1: " + ", ".join(f"{p} {r['val_f1_macro'][-1]:.4f}" for p, r in
                                                    report["runs"].items())
          + f"; largest difference {report['final_f1_difference']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
