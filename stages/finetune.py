"""Stage `finetune@{scratch,pretrained}`: train the classifier on the labelled fraction.

Run once per seed in `seeds` (`--seed`), on that seed's split. Both inits use the same classifier, recipe,
seed and number of optimiser steps; only the extractor's initial weights differ: `scratch` draws them from
the seed, `pretrained` loads the seed's own pretraining (models/pretrained/seed{seed}.pt). The head is drawn
from the seed after that, so it starts identical for both inits of a seed (a paired comparison). An "epoch"
is the number of steps of one pass over the full (100 %) labelled pool, whatever the fraction, so smaller
fractions make more passes and every fraction trains for the same number of steps. Each epoch logs training
and validation metrics only; validation macro-F1 picks the best epoch, and the test set is evaluated once,
at the end, on that epoch's weights.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from stages import paths
from stages.augment import labelled_batches, normalize
from stages.common import (announce, atomic_path, describe_device, device_from_params, device_generator, load_params, param,
                           save_torch, seed_everything)
from stages.data import labelled_images, load_dataset, prefetched
from stages.distributed import NullLive, run_parallel_stage, setup
from stages.engine import Trainer, chunks, classification_metrics, resolve_precision, sgd, slow_hint
from stages.models import Classifier, build_extractor, load_extractor
from stages.resume import Resume, fingerprint

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
    wall_start = time.perf_counter()
    params = load_params()
    dist, device = setup(device_from_params(params))
    precision = resolve_precision(param(params, "precision"), device)
    if dist.main:
        announce(f"finetune {init} seed {seed}", device, precision)
    compile_model = param(params, "compile")
    epochs = param(params, "finetune.epochs")
    batch_size = param(params, "finetune.batch_size")
    lr = param(params, "finetune.lr")
    weight_decay = param(params, "finetune.weight_decay")
    warmup = param(params, "finetune.warmup_epochs")
    smoothing = param(params, "finetune.label_smoothing")
    pad = param(params, "finetune.crop_padding")
    eval_batch = param(params, "finetune.eval_batch_size")
    arch, stem = param(params, "model.arch"), param(params, "model.stem")
    model_path, live_dir = outputs(init, seed)

    seed_everything(seed)
    dataset, meta = load_dataset(paths.DATASET)
    validation = np.load(paths.validation(seed))
    labelled = np.load(paths.labelled(seed))
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
    steps = math.ceil(pool_size / batch_size)
    trainer = Trainer(model, sgd(model, lr, weight_decay), epochs * steps, int(warmup * steps), device,
                      label_smoothing=smoothing, dist=dist, compile=compile_model, precision=precision,
                      slow_hint=slow_hint(params, device))
    gen = device_generator(seed, device)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, mean, std)

    inputs = [paths.DATASET, paths.splits(seed)] + ([paths.pretrained(seed)] if init == "pretrained" else [])
    resume = Resume(f"finetune-{init}-seed{seed}",
                    fingerprint({"init": init, "seed": seed, "model": params["model"], "finetune": params["finetune"],
                                 "world": dist.world}, inputs),
                    live_dir if dist.main else None)
    best: dict = {"val_f1": -1.0}
    elapsed, wall_before, first_epoch = 0.0, 0.0, 1
    state = resume.restore(trainer, gen)
    if state is not None:  # a checkpoint is saved after an epoch, so it always has a best epoch
        best = state["best"]
        elapsed, wall_before, first_epoch = state["elapsed"], state["wall_seconds"], state["epoch"] + 1
    live = (Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=state is not None)
            if dist.main else NullLive())
    live.step = first_epoch - 1  # epoch e is step e - 1 (dvclive's own resume cannot tell step 0 from none)
    for epoch in range(first_epoch, epochs + 1):
        batches = labelled_batches(train_x, train_y, batch_size, steps, pad, mean, std, gen, dist)
        if train_x.stream:  # read the next batch while this one trains
            batches = prefetched(batches)
        stats = trainer.train_epoch(batches, steps, f"finetune@{init}-{seed} {epoch}/{epochs}")
        elapsed += stats["seconds"]
        val = classification_metrics(trainer.predict(chunks(val_x, eval_batch, norm)), val_y)
        live.log_metric("train/loss", stats["loss"])
        live.log_metric("train/accuracy", stats["score"])
        for key, value in val.items():
            live.log_metric(f"val/{key}", value)
        live.log_metric("lr", stats["lr"])
        live.log_metric("epoch_seconds", stats["seconds"])
        live.log_metric("images_per_s", stats["images_per_s"])
        if dist.main:
            print(f"finetune@{init}-{seed} {epoch}/{epochs}: train loss {stats['loss']:.3f}, val F1 {val['f1_macro']:.3f}, "
                  f"{stats['images_per_s']:.0f} img/s")
        if val["f1_macro"] > best["val_f1"]:
            best = {"val_f1": val["f1_macro"], "epoch": epoch, "val": val,
                    "state": copy.deepcopy({k: v.cpu() for k, v in trainer.model.state_dict().items()})}
        live.next_step()
        if dist.main:
            resume.save_epoch(epoch, trainer, gen, best=best, elapsed=elapsed,
                              wall_seconds=wall_before + time.perf_counter() - wall_start)

    # the one look at the test set: the validation-selected epoch's weights
    trainer.model.load_state_dict(best["state"])
    test_logits = trainer.predict(chunks(test_x, eval_batch, norm))
    test = classification_metrics(test_logits, test_y)
    if dist.main:
        print(f"finetune@{init}-{seed}: epoch {best['epoch']} chosen on validation (F1 {best['val_f1']:.3f}); "
              f"test F1 {test['f1_macro']:.3f}")
    live.summary["best"] = {"epoch": best["epoch"], "val": best["val"], "test": test,
                            "train_seconds": elapsed, "steps": epochs * steps, "steps_per_epoch": steps,
                            "labelled_size": int(len(labelled)), "seed": seed, "device": describe_device(device),
                            "processes": dist.world, "streamed": train_x.stream,
                            "wall_seconds": wall_before + time.perf_counter() - wall_start}
    live.end()
    if not dist.main:
        return
    write_predictions(live_dir / "predictions.csv", np.arange(len(test_y)), test_y, test_logits.argmax(1).numpy(),
                      dataset.classes)
    save_torch({"arch": arch, "stem": stem, "init": init, "epoch": best["epoch"], "classes": dataset.classes,
                "state_dict": best["state"]}, model_path)
    resume.clear()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", choices=INITS, required=True)
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` param (dvc.yaml passes each)")
    args = parser.parse_args()
    run_parallel_stage(lambda: main(args.init, args.seed), outputs=outputs(args.init, args.seed))
