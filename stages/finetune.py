"""Stage `finetune@{scratch,pretrained}`: train the classifier on the labelled fraction.

Run once per seed in `seeds` (`--seed`), on that seed's split. Both inits use the same classifier, recipe,
seed and number of optimiser steps; only the extractor's initial weights differ: `scratch` draws them from
the seed, `pretrained` loads the seed's own pretraining (models/pretrained/seed{seed}.pt). The head is drawn
from the seed after that, so it starts identical for both inits of a seed (a paired comparison). An "epoch"
is the number of steps of one pass over the full (100 %) labelled pool, whatever the fraction, so smaller
fractions make more passes; the number of epochs is `finetune.epochs`, or the fraction's own entry in
`finetune.epochs_by_fraction` (larger fractions need more steps to reach their plateau). The budget is fixed
(chosen beforehand on validation, docs/protocol.md) and the run keeps its last epoch: no model selection, so
no run uses more validation labels than it has training labels (none). Each epoch logs training and validation
metrics (the curves); the test set is evaluated once, at the end, on the last epoch's weights.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from selfsup.core import paths
from selfsup.core.dataset import load_dataset
from selfsup.core.files import atomic_path, save_torch
from selfsup.finetune import FineTune
from selfsup.loop.resume import fingerprint
from selfsup.loop.training_stage import EpochLog, TrainingStage
from selfsup.training.devices import describe_device
from selfsup.stage import run_stage
from selfsup.training.distributed import parallel

INITS = paths.INITS


def outputs(init: str, seed: int) -> tuple[Path, Path]:
    return paths.finetuned(init, seed), paths.finetune_log(init, seed)


def write_predictions(path: Path, indices: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                      classes: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "actual", "predicted"])
        writer.writerows((int(i), classes[a], classes[p]) for i, a, p in zip(indices, labels, preds))


def main(init: str, seed: int) -> None:
    stage = TrainingStage.start(f"finetune {init} seed {seed}")
    params, device, dist = stage.params, stage.device, stage.dist
    model_path, live_dir = outputs(init, seed)
    dataset, meta = load_dataset(paths.DATASET)
    validation = paths.load_indices(paths.validation(seed))
    labelled = paths.load_indices(paths.labelled(seed))
    # the checkpoint is read only by finetune_pretrained (declared there), and must come from this pretext
    run = FineTune.from_stage(stage, dataset, meta, labelled, validation, init, seed, paths.pretrained(seed))
    recipe, trainer, gen = run.setup.recipe, run.trainer, run.generator

    inputs = [paths.DATASET, paths.splits(seed)] + ([paths.pretrained(seed)] if init == "pretrained" else [])
    log = EpochLog(f"finetune-{init}-seed{seed}",
                   live_dir, fingerprint({"init": init, "seed": seed, "model": params["model"],
                                          "finetune": params["finetune"], "world": dist.world}, inputs),
                   stage, recipe.epochs)
    state = log.open(trainer, gen)
    val: dict = {} if state is None else state["val"]
    elapsed = 0.0 if state is None else state["elapsed"]
    for epoch in log.epochs():
        stats = log.train(trainer, run.epoch_batches(), run.steps, f"finetune@{init}-{seed} {epoch}/{recipe.epochs}")
        elapsed += stats["seconds"]
        with log.timed("validation"):
            val = run.validate()
        log.log({"train/loss": stats["loss"], "train/accuracy": stats["score"],
                 **{f"val/{key}": value for key, value in val.items()},
                 "lr": stats["lr"], "epoch_seconds": stats["seconds"], "images_per_s": stats["images_per_s"]})
        if dist.main:
            print(f"finetune@{init}-{seed} {epoch}/{recipe.epochs}: train loss {stats['loss']:.3f}, "
                  f"val F1 {val['f1_macro']:.3f}, {stats['images_per_s']:.0f} img/s")
        log.end_epoch(epoch, trainer, gen, val=val, elapsed=elapsed)

    # the one look at the test set: the last epoch's weights
    with log.timed("test"):
        test, test_logits = run.test()
    if dist.main:
        print(f"finetune@{init}-{seed}: last epoch ({recipe.epochs}) validation F1 {val['f1_macro']:.3f}; "
              f"test F1 {test['f1_macro']:.3f}")
    log.close({"final": {"epoch": recipe.epochs, "val": val, "test": test,
                        "train_seconds": elapsed, "steps": recipe.epochs * run.steps, "steps_per_epoch": run.steps,
                        "labelled_size": int(len(labelled)), "seed": seed, "device": describe_device(device),
                        "processes": dist.world, "streamed": run.train_x.stream, "wall_seconds": log.wall_seconds,
                        "numerics": stage.numerics(trainer)}})
    if not dist.main:
        return
    write_predictions(live_dir / "predictions.csv", np.arange(len(run.test_y)), run.test_y, test_logits.argmax(1).numpy(),
                      dataset.classes)
    state_dict = {k: v.cpu() for k, v in trainer.model.state_dict().items()}
    save_torch({"arch": run.setup.arch, "stem": run.setup.stem, "init": init, "epoch": recipe.epochs,
                "classes": dataset.classes, "state_dict": state_dict}, model_path)
    log.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", choices=INITS, required=True)
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` param (dvc.yaml passes each)")
    args = parser.parse_args()
    run_stage(parallel(lambda: main(args.init, args.seed)), outputs=outputs(args.init, args.seed))
