"""Stage `pretrain@{seed}`: train a randomly initialised extractor on the pretext task `pretext.task` (see
stages/pretexts/), without labels; once per seed in `seeds` (`--seed`), each its own replicate.

Uses every training image except the seed's validation split, and the dataset's unlabeled images if it has any
(labels unused; test images never); a set too large for the device streams from its memory-mapped arrays
(param `stream`). After each epoch (and once before training: the random extractor) it logs the pretext
loss and metric (accuracy, or PSNR for reconstruction), on validation images the extractor never trained
on: the pretext metric, the task's shortcut controls (`val/control_*`, see stages/pretexts/base.py) and a
linear probe of the extractor, the number that says whether it transfers.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from dvclive import Live

from stages import paths
from stages.augment import normalize
from stages.common import (UserError, announce, describe_device, device_from_params, device_generator, load_params, param,
                           seed_everything)
from stages.data import ImageStore, image_bytes, load_dataset, prefetched, should_stream
from stages.distributed import NullLive, run_parallel_stage, setup
from stages.engine import Trainer, resolve_precision, sgd, slow_hint
from stages.models import build_extractor, save_extractor
from stages.pretexts import build_task, heldout_scores, pretext_batches
from stages.probe import frozen_features, linear_probe_accuracy
from stages.resume import Resume, fingerprint


def main(seed: int) -> None:
    wall_start = time.perf_counter()
    params = load_params()
    out, live_dir = paths.pretrained(seed), paths.pretrain_log(seed)
    dist, device = setup(device_from_params(params))
    precision = resolve_precision(param(params, "precision"), device)
    if dist.main:
        announce(f"pretrain seed {seed}", device, precision)
    compile_model = param(params, "compile")
    epochs = param(params, "pretext.epochs")
    batch_size = param(params, "pretext.batch_size")
    lr = param(params, "pretext.lr")
    weight_decay = param(params, "pretext.weight_decay")
    warmup = param(params, "pretext.warmup_epochs")
    probe_size = param(params, "pretext.probe_size")
    eval_batch = param(params, "pretext.eval_batch_size")
    arch, stem = param(params, "model.arch"), param(params, "model.stem")
    stream = param(params, "stream")

    seed_everything(seed)
    dataset, meta = load_dataset(paths.DATASET)
    mean = torch.tensor(meta["mean"], device=device)
    std = torch.tensor(meta["std"], device=device)
    task = build_task(params, meta["image_size"], mean, std)
    validation = np.load(paths.validation(seed))
    if len(validation) < 20:
        raise UserError("the validation split has fewer than 20 images: raise split.val_fraction")
    extractor, feat_dim = build_extractor(arch, stem, meta["image_size"])
    net = task.network(extractor, feat_dim)

    gen = device_generator(seed, device)
    sources = [dataset.train_images] + ([dataset.unlabeled_images] if dataset.unlabeled_images is not None else [])
    rows = [np.setdiff1d(np.arange(len(dataset.train_images)), validation)] + [None] * (len(sources) - 1)
    images = ImageStore(sources, device, should_stream(stream, image_bytes(sources, rows), device), rows)  # no labels
    steps = math.ceil(len(images) / batch_size)
    trainer = Trainer(net, sgd(net, lr, weight_decay), epochs * steps, int(warmup * steps), device, dist=dist,
                      compile=compile_model, criterion=task.criterion, precision=precision,
                      slow_hint=slow_hint(params, device))

    rng = np.random.default_rng(seed)
    probe_idx = np.sort(rng.choice(validation, size=min(probe_size, len(validation)), replace=False))
    probe_images = torch.from_numpy(dataset.train_images[probe_idx]).to(device)
    probe_labels = dataset.train_labels[probe_idx]

    def probe() -> float:
        # The extractor's BatchNorm statistics describe the pretext's inputs (gray, per-patch-normalised
        # patches for context): the probe re-estimates them on the probe images (labels unused) in a copy,
        # as fine-tuning in train mode would.
        feats, = frozen_features(trainer.model.extractor, [probe_images], probe_images, eval_batch,
                                 lambda x: normalize(x, mean, std), device, precision)
        return linear_probe_accuracy(feats, probe_labels, seed)

    def heldout() -> None:
        # the same held-out examples every epoch
        for key, value in heldout_scores(task, trainer.predict, probe_images, eval_batch, seed + 1).items():
            live.log_metric(f"val/{key}" if key.startswith("control_") else f"val/pretext_{key}", value)

    resume = Resume(f"pretrain-seed{seed}",
                    fingerprint({k: params[k] for k in ("model", "pretext")} | {"seed": seed, "world": dist.world},
                                [paths.DATASET, paths.validation(seed)]),
                    live_dir if dist.main else None)
    state = resume.restore(trainer, gen)
    first_epoch, wall_before = (state["epoch"] + 1, state["wall_seconds"]) if state else (1, 0.0)
    live = (Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=state is not None)
            if dist.main else NullLive())
    metric = task.metric
    if state is None:
        live.log_metric("probe/linear_accuracy", probe())
        heldout()
        live.next_step()
    live.step = first_epoch  # step 0 is the random extractor, step e the end of epoch e
    for epoch in range(first_epoch, epochs + 1):
        batches = pretext_batches(task, images, batch_size, steps, gen, dist)
        if images.stream:  # read and cut the next batch while this one trains
            batches = prefetched(batches)
        stats = trainer.train_epoch(batches, steps, f"pretrain@{seed} {task.name} {epoch}/{epochs}")
        accuracy = probe()
        live.log_metric("train/pretext_loss", stats["loss"])
        live.log_metric(f"train/pretext_{metric}", stats["score"])
        heldout()
        live.log_metric("probe/linear_accuracy", accuracy)
        live.log_metric("lr", stats["lr"])
        live.log_metric("epoch_seconds", stats["seconds"])
        live.log_metric("examples_per_s", stats["images_per_s"])
        if dist.main:
            print(f"pretrain@{seed} {task.name} {epoch}/{epochs}: pretext loss {stats['loss']:.3f} {metric} "
                  f"{stats['score']:.3f}, probe {accuracy:.3f}, {stats['images_per_s']:.0f} examples/s")
        live.next_step()
        if dist.main:
            resume.save_epoch(epoch, trainer, gen, wall_seconds=wall_before + time.perf_counter() - wall_start)
    live.summary["pretext"] = {"task": task.name, "metric": metric, "chance": task.chance,
                               "images": len(images), "heldout_images": len(probe_idx), "streamed": images.stream}
    live.summary["seed"] = seed
    live.summary["device"] = describe_device(device)
    live.summary["processes"] = dist.world
    live.summary["wall_seconds"] = wall_before + time.perf_counter() - wall_start
    live.end()
    if dist.main:
        save_extractor(trainer.model.extractor, arch, stem, feat_dim, out, **task.describe())
        resume.clear()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` param (dvc.yaml passes each)")
    args = parser.parse_args()
    run_parallel_stage(lambda: main(args.seed), outputs=[paths.pretrained(args.seed), paths.pretrain_log(args.seed)])
