"""Do bf16 and fp32 train to the same place? A short real fine-tune, same seed, in each precision.

    python -m tools.precision_check --dataset data/dataset --json bench/precision-check.json

Fine-tunes a classifier from scratch on `--train` images of a dataset written by the download stage and
scores macro-F1 on `--val` other training images after every epoch, through the stages' own engine and
batch stream (crop, flip, normalisation), once per precision in `--precisions`, from the same seed (same
initial weights, same batches, same augmentation). Prints and writes the validation macro-F1 of each run
and the largest difference. Not a stage and not a test (the test on tiny data is in tests/test_engine.py):
the figure in the README's "Speed" comes from here. Test images are never read.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from selfsup.training.augment import labelled_batches, normalize
from selfsup.core.dataset import load_dataset
from selfsup.training.devices import configure_device, device_generator, resolve_device, seed_everything
from selfsup.config import PRECISIONS, STEMS
from selfsup.training.engine import Trainer, chunks, classification_metrics, sgd
from selfsup.training.models import Classifier, build_extractor


def run(args: argparse.Namespace, precision: str) -> dict:
    device = configure_device(resolve_device(args.device))
    dataset, meta = load_dataset(Path(args.dataset))
    rng = np.random.default_rng(args.seed)
    picked = rng.permutation(len(dataset.train_labels))[:args.train + args.val]
    train, val = np.sort(picked[:args.train]), np.sort(picked[args.train:])
    mean, std = torch.tensor(meta["mean"], device=device), torch.tensor(meta["std"], device=device)
    x = torch.from_numpy(np.array(dataset.train_images[train])).to(device)
    y = torch.from_numpy(dataset.train_labels[train]).to(device)
    vx = torch.from_numpy(np.array(dataset.train_images[val])).to(device)
    vy = dataset.train_labels[val]
    seed_everything(args.seed)
    extractor, dim = build_extractor(args.arch, args.stem)
    model = Classifier(extractor, dim, len(dataset.classes))
    steps = math.ceil(args.train / args.batch_size)
    trainer = Trainer(model, sgd(model, args.lr, 5e-4), args.epochs * steps, steps // 5, device,
                      label_smoothing=0.1, precision=precision)
    gen = device_generator(args.seed, device)
    f1s, seconds = [], 0.0
    for epoch in range(args.epochs):
        stats = trainer.train_epoch(labelled_batches(x, y, args.batch_size, steps, 4, mean, std, gen), steps,
                                    f"{precision} {epoch + 1}/{args.epochs}")
        seconds += stats["seconds"]
        logits = trainer.predict(chunks(vx, 500, lambda b: normalize(b, mean, std)))
        f1s.append(classification_metrics(logits, vy)["f1_macro"])
        print(f"{precision} epoch {epoch + 1}: validation macro-F1 {f1s[-1]:.4f}", flush=True)
    return {"val_f1_macro": f1s, "train_seconds": seconds, "images_per_s": args.epochs * steps * args.batch_size
            / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="data/dataset")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--stem", default="imagenet", choices=list(STEMS))
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
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
