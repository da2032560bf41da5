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
import math
from pathlib import Path

import numpy as np
import torch

from selfsup.core import paths
from selfsup.training.augment import labelled_batches, normalize
from selfsup.core.dataset import load_dataset
from selfsup.training.image_store import labelled_images, prefetched
from selfsup.training.devices import describe_device, device_generator, seed_everything
from selfsup.training.distributed import run_parallel_stage
from selfsup.training.engine import chunks, classification_metrics
from selfsup.core.files import atomic_path, save_torch
from selfsup.training.models import Classifier, build_extractor, load_extractor
from selfsup.core.params import param
from selfsup.loop.resume import fingerprint
from selfsup.loop.training_stage import EpochLog, Recipe, TrainingStage

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
    recipe = Recipe.read(params, "finetune")  # its epochs: this fraction's budget
    arch, stem = param(params, "model.arch"), param(params, "model.stem")
    model_path, live_dir = outputs(init, seed)

    seed_everything(seed)
    dataset, meta = load_dataset(paths.DATASET)
    validation = paths.load_indices(paths.validation(seed))
    labelled = paths.load_indices(paths.labelled(seed))
    if init == "scratch":
        extractor, feat_dim = build_extractor(arch, stem)
    else:
        # read only by finetune_pretrained (declared there): the checkpoint must come from this pretext
        extractor, feat_dim = load_extractor(paths.pretrained(seed), arch, stem, param(params, "pretext.task"))
    torch.manual_seed(seed)  # the head starts identical for both inits
    model = Classifier(extractor, feat_dim, len(dataset.classes))

    mean = torch.tensor(meta["mean"], device=device)
    std = torch.tensor(meta["std"], device=device)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = labelled_images(dataset, labelled, validation, device,
                                                                          param(params, "stream"))
    train_y = torch.from_numpy(train_y).to(device)

    pool_size = len(dataset.train_labels) - len(validation)
    steps = math.ceil(pool_size / recipe.batch_size)
    trainer = recipe.trainer(model, steps, stage, label_smoothing=param(params, "finetune.label_smoothing"))
    gen = device_generator(seed, device)
    pad = param(params, "finetune.crop_padding")

    def norm(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, mean, std)

    inputs = [paths.DATASET, paths.splits(seed)] + ([paths.pretrained(seed)] if init == "pretrained" else [])
    log = EpochLog(f"finetune-{init}-seed{seed}",
                   live_dir, fingerprint({"init": init, "seed": seed, "model": params["model"],
                                          "finetune": params["finetune"], "world": dist.world}, inputs),
                   stage, recipe.epochs)
    state = log.open(trainer, gen)
    val: dict = {} if state is None else state["val"]
    elapsed = 0.0 if state is None else state["elapsed"]
    for epoch in log.epochs():
        batches = labelled_batches(train_x, train_y, recipe.batch_size, steps, pad, mean, std, gen, dist)
        if train_x.stream:  # read the next batch while this one trains
            batches = prefetched(batches)
        stats = log.train(trainer, batches, steps, f"finetune@{init}-{seed} {epoch}/{recipe.epochs}")
        elapsed += stats["seconds"]
        with log.timed("validation"):
            val = classification_metrics(trainer.predict(chunks(val_x, recipe.eval_batch_size, norm)), val_y)
        log.log({"train/loss": stats["loss"], "train/accuracy": stats["score"],
                 **{f"val/{key}": value for key, value in val.items()},
                 "lr": stats["lr"], "epoch_seconds": stats["seconds"], "images_per_s": stats["images_per_s"]})
        if dist.main:
            print(f"finetune@{init}-{seed} {epoch}/{recipe.epochs}: train loss {stats['loss']:.3f}, "
                  f"val F1 {val['f1_macro']:.3f}, {stats['images_per_s']:.0f} img/s")
        log.end_epoch(epoch, trainer, gen, val=val, elapsed=elapsed)

    # the one look at the test set: the last epoch's weights
    with log.timed("test"):
        test_logits = trainer.predict(chunks(test_x, recipe.eval_batch_size, norm))
        test = classification_metrics(test_logits, test_y)
    if dist.main:
        print(f"finetune@{init}-{seed}: last epoch ({recipe.epochs}) validation F1 {val['f1_macro']:.3f}; "
              f"test F1 {test['f1_macro']:.3f}")
    log.close({"final": {"epoch": recipe.epochs, "val": val, "test": test,
                        "train_seconds": elapsed, "steps": recipe.epochs * steps, "steps_per_epoch": steps,
                        "labelled_size": int(len(labelled)), "seed": seed, "device": describe_device(device),
                        "processes": dist.world, "streamed": train_x.stream, "wall_seconds": log.wall_seconds,
                        "numerics": stage.numerics(trainer)}})
    if not dist.main:
        return
    write_predictions(live_dir / "predictions.csv", np.arange(len(test_y)), test_y, test_logits.argmax(1).numpy(),
                      dataset.classes)
    state_dict = {k: v.cpu() for k, v in trainer.model.state_dict().items()}
    save_torch({"arch": arch, "stem": stem, "init": init, "epoch": recipe.epochs, "classes": dataset.classes,
                "state_dict": state_dict}, model_path)
    log.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", choices=INITS, required=True)
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` param (dvc.yaml passes each)")
    args = parser.parse_args()
    run_parallel_stage(lambda: main(args.init, args.seed), outputs=outputs(args.init, args.seed))
