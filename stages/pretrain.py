"""Stage `pretrain`: train a randomly initialised extractor (seeded by `seed`) on the pretext task, without labels.

Uses every training image (labels unused). After each epoch (and once before training: the random
extractor) it logs the pretext loss/accuracy, the pretext accuracy on held-out validation images, and a
linear probe of the extractor on labelled validation images, the number that says whether it transfers.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from stages.augment import normalize
from stages.common import (UserError, describe_device, device_from_params, device_generator, load_params, param,
                           seed_everything)
from stages.context import ContextNet, Geometry, make_pairs, pretext_batches
from stages.data import load_dataset
from stages.distributed import NullLive, run_parallel_stage, setup
from stages.engine import Trainer, sgd
from stages.models import build_extractor, save_extractor
from stages.probe import frozen_features, linear_probe_accuracy

OUT = Path("models/pretrained.pt")
LIVE = Path("metrics/pretrain")
TASKS = ("context",)


def main() -> None:
    wall_start = time.perf_counter()
    params = load_params()
    seed = param(params, "seed", int)
    dist, device = setup(device_from_params(params))
    compile_model = param(params, "compile", bool)
    param(params, "pretext.task", str, choices=TASKS)
    epochs = param(params, "pretext.epochs", int, low=1)
    batch_size = param(params, "pretext.batch_size", int, low=2)
    lr = param(params, "pretext.lr", float, low=0, low_open=True)
    weight_decay = param(params, "pretext.weight_decay", float, low=0)
    warmup = param(params, "pretext.warmup_epochs", (int, float), low=0)
    probe_size = param(params, "pretext.probe_size", int, low=20)
    eval_batch = param(params, "pretext.eval_batch_size", int, low=1)
    arch, stem = param(params, "model.arch", str), param(params, "model.stem", str)
    geo = Geometry.from_params(params)

    seed_everything(seed)
    dataset, meta = load_dataset(Path("data/dataset"))
    geo.check(meta["image_size"])
    validation = np.load("data/splits/validation.npy")
    if len(validation) < 20:
        raise UserError("the validation split has fewer than 20 images: raise split.val_fraction")
    extractor, feat_dim = build_extractor(arch, stem)
    net = ContextNet(extractor, feat_dim)

    gen = device_generator(seed, device)
    images = torch.from_numpy(dataset.train_images).to(device)  # all training images; labels unused
    steps = math.ceil(len(images) / batch_size)
    trainer = Trainer(net, sgd(net, lr, weight_decay), epochs * steps, int(warmup * steps), device, dist=dist,
                      compile=compile_model)

    rng = np.random.default_rng(seed)
    probe_idx = np.sort(rng.choice(validation, size=min(probe_size, len(validation)), replace=False))
    probe_images = torch.from_numpy(dataset.train_images[probe_idx]).to(device)
    probe_labels = dataset.train_labels[probe_idx]
    mean = torch.tensor(meta["mean"], device=device)
    std = torch.tensor(meta["std"], device=device)

    def probe() -> float:
        # The extractor's BatchNorm statistics describe gray, per-patch-normalised patches: the probe
        # re-estimates them on the probe images (labels unused) in a copy, as fine-tuning in train mode would.
        feats, = frozen_features(trainer.model.extractor, [probe_images], probe_images, eval_batch,
                                 lambda x: normalize(x, mean, std), device)
        return linear_probe_accuracy(feats, probe_labels, seed)

    def heldout_pretext_accuracy() -> float:
        fixed = device_generator(seed + 1, device)  # the same held-out pairs every epoch
        pairs = [make_pairs(probe_images[i:i + eval_batch], geo, fixed)
                 for i in range(0, len(probe_images), eval_batch)]
        logits = trainer.predict(p for p, _ in pairs)
        targets = torch.cat([t for _, t in pairs]).cpu()
        return (logits.argmax(1) == targets).float().mean().item()

    live = Live(str(LIVE), dvcyaml=False, save_dvc_exp=False, report=None) if dist.main else NullLive()
    live.log_metric("probe/linear_accuracy", probe())
    live.log_metric("val/pretext_accuracy", heldout_pretext_accuracy())
    live.next_step()
    for epoch in range(1, epochs + 1):
        batches = pretext_batches(images, geo, batch_size, steps, gen, dist)
        stats = trainer.train_epoch(batches, steps, f"pretrain {epoch}/{epochs}")
        accuracy = probe()
        for key in ("loss", "accuracy"):
            live.log_metric(f"train/pretext_{key}", stats[key])
        live.log_metric("val/pretext_accuracy", heldout_pretext_accuracy())
        live.log_metric("probe/linear_accuracy", accuracy)
        live.log_metric("lr", stats["lr"])
        live.log_metric("epoch_seconds", stats["seconds"])
        live.log_metric("pairs_per_s", stats["images_per_s"])
        if dist.main:
            print(f"pretrain {epoch}/{epochs}: pretext loss {stats['loss']:.3f} acc {stats['accuracy']:.3f}, "
                  f"probe {accuracy:.3f}, {stats['images_per_s']:.0f} pairs/s")
        live.next_step()
    live.summary["device"] = describe_device(device)
    live.summary["processes"] = dist.world
    live.summary["wall_seconds"] = time.perf_counter() - wall_start
    live.end()
    if dist.main:
        save_extractor(trainer.model.extractor, arch, stem, feat_dim, OUT, pretext="context")


if __name__ == "__main__":
    run_parallel_stage(main, outputs=[OUT, LIVE])
