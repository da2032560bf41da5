"""Stage `pretrain@{seed}`: train a randomly initialised extractor on the pretext task `pretext.task` (see
selfsup/pretexts/), without labels; once per seed in `seeds` (`--seed`), each its own replicate.

Uses every training image except the seed's validation set (drawn as the split stage draws it, from the seed
and `split.val_fraction`: no label fraction reaches a pretraining), and the dataset's unlabeled images if it has any
(labels unused; test images never); a set too large for the device streams from its memory-mapped arrays
(param `stream`). After each epoch it logs the pretext loss and metric (accuracy, or PSNR for
reconstruction) in training; once before training (the random extractor), every `pretext.monitor_every`
epochs and after the last, on validation images the extractor never trained on: the pretext metric, the
task's shortcut controls (`val/control_*`, see selfsup/pretexts/base.py) and a linear probe of the extractor,
the number that says whether it transfers. Those monitors are kept to a small share of the stage's time
(printed at its end); the final ones always use all `pretext.probe_size` images.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from selfsup.core import paths
from selfsup.training.augment import normalize
from selfsup.core.dataset import load_dataset
from selfsup.training.image_store import ImageStore, image_bytes, prefetched, should_stream
from selfsup.training.devices import describe_device, device_generator, seed_everything
from selfsup.stage import run_stage
from selfsup.training.distributed import parallel
from selfsup.linear_eval import frozen_features, linear_probe_accuracy
from selfsup.training.models import build_extractor, save_extractor
from selfsup.core.params import UserError, param
from selfsup.pretexts import build_task
from selfsup.pretexts.base import heldout_scores, pretext_batches
from selfsup.loop.resume import fingerprint
from selfsup.subsets import validation_indices
from selfsup.loop.training_stage import EpochLog, Recipe, TrainingStage


def main(seed: int) -> None:
    stage = TrainingStage.start(f"pretrain seed {seed}")
    params, device, dist = stage.params, stage.device, stage.dist
    recipe = Recipe.read(params, "pretext")
    out, live_dir = paths.pretrained(seed), paths.pretrain_log(seed)
    probe_size, monitor_every = param(params, "pretext.probe_size"), param(params, "pretext.monitor_every")
    arch, stem = param(params, "model.arch"), param(params, "model.stem")

    seed_everything(seed)
    dataset, meta = load_dataset(paths.DATASET)
    mean = torch.tensor(meta["mean"], device=device)
    std = torch.tensor(meta["std"], device=device)
    task = build_task(params, meta["image_size"], mean, std)
    # the seed's validation set, drawn as the split stage draws it (selfsup/subsets.py): pretraining depends on the
    # seed and split.val_fraction alone, never on a label fraction
    validation = validation_indices(dataset.train_labels, seed, param(params, "split.val_fraction"))
    if len(validation) < 20:
        raise UserError("the validation split has fewer than 20 images: raise split.val_fraction")
    extractor, feat_dim = build_extractor(arch, stem, meta["image_size"])
    net = task.network(extractor, feat_dim)

    gen = device_generator(seed, device)
    sources = [dataset.train_images] + ([dataset.unlabeled_images] if dataset.unlabeled_images is not None else [])
    rows = [np.setdiff1d(np.arange(len(dataset.train_images)), validation)] + [None] * (len(sources) - 1)
    stream = should_stream(param(params, "stream"), image_bytes(sources, rows), device)
    images = ImageStore(sources, device, stream, rows)  # no labels
    steps = math.ceil(len(images) / recipe.batch_size)
    trainer = recipe.trainer(net, steps, stage, criterion=task.criterion)

    rng = np.random.default_rng(seed)
    probe_idx = np.sort(rng.choice(validation, size=min(probe_size, len(validation)), replace=False))
    probe_images = torch.from_numpy(dataset.train_images[probe_idx]).to(device)
    probe_labels = dataset.train_labels[probe_idx]

    def probe() -> float:
        # The extractor's BatchNorm statistics describe the pretext's inputs (gray, per-patch-normalised
        # patches for context): the probe re-estimates them on the probe images (labels unused) in a copy,
        # as fine-tuning in train mode would.
        with log.timed("probe"):
            feats, = frozen_features(trainer.model.extractor, [probe_images], probe_images, recipe.eval_batch_size,
                                     lambda x: normalize(x, mean, std), device)
            return linear_probe_accuracy(feats, probe_labels, seed)

    def heldout() -> dict[str, float]:
        # the same held-out examples every epoch
        with log.timed("heldout"):  # the pretext's held-out score and its shortcut controls
            scores = heldout_scores(task, trainer.predict, probe_images, recipe.eval_batch_size, seed + 1)
        return {f"val/{key}" if key.startswith("control_") else f"val/pretext_{key}": v for key, v in scores.items()}

    log = EpochLog(f"pretrain-seed{seed}", live_dir,
                   fingerprint({k: params[k] for k in ("model", "pretext", "split")} | {"seed": seed, "world": dist.world},
                               [paths.DATASET]),
                   stage, recipe.epochs)
    # step 0 is the random extractor, step e the end of epoch e
    log.open(trainer, gen, initial=lambda: {"probe/linear_accuracy": probe(), **heldout()})
    metric = task.metric
    for epoch in log.epochs():
        batches = pretext_batches(task, images, recipe.batch_size, steps, gen, dist)
        if images.stream:  # read and cut the next batch while this one trains
            batches = prefetched(batches)
        stats = log.train(trainer, batches, steps, f"pretrain@{seed} {task.name} {epoch}/{recipe.epochs}")
        monitored = epoch % monitor_every == 0 or epoch == recipe.epochs
        monitors = {**heldout(), "probe/linear_accuracy": probe()} if monitored else {}
        log.log({"train/pretext_loss": stats["loss"], f"train/pretext_{metric}": stats["score"], **monitors,
                 "lr": stats["lr"], "epoch_seconds": stats["seconds"], "examples_per_s": stats["images_per_s"]})
        if dist.main:
            probed = f", probe {monitors['probe/linear_accuracy']:.3f}" if monitored else ""
            print(f"pretrain@{seed} {task.name} {epoch}/{recipe.epochs}: pretext loss {stats['loss']:.3f} {metric} "
                  f"{stats['score']:.3f}{probed}, {stats['images_per_s']:.0f} examples/s")
        log.end_epoch(epoch, trainer, gen)
    log.close({"pretext": {"task": task.name, "metric": metric, "chance": task.chance, "images": len(images),
                           "heldout_images": len(probe_idx), "streamed": images.stream},
               "seed": seed, "device": describe_device(device), "processes": dist.world,
               "wall_seconds": log.wall_seconds, "numerics": stage.numerics(trainer)})
    if dist.main:
        save_extractor(trainer.model.extractor, arch, stem, feat_dim, out, **task.describe())
        log.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` param (dvc.yaml passes each)")
    args = parser.parse_args()
    run_stage(parallel(lambda: main(args.seed)), outputs=[paths.pretrained(args.seed), paths.pretrain_log(args.seed)])
