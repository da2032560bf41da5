"""Sizing a profile: one scratch fine-tune with the project's engine, validation macro-F1 after every epoch.

    python -m tools.size_finetune --arch nets.fast_cnn:build --fraction 0.1 --epochs 6 --out size.json

Reads a downloaded dataset (`data/dataset`, or --dataset) and splits it as `split@<seed>` does; an epoch is
one pass over the 100 % labelled pool, as in `finetune`. Not a stage and not a test: its numbers are in the
README ("Sizing the cpu profile").
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch

from selfsup.augment import labelled_batches, normalize
from selfsup.data import labelled_images, load_dataset
from selfsup.devices import device_generator, seed_everything
from selfsup.engine import Trainer, chunks, classification_metrics, sgd
from selfsup.models import Classifier, build_extractor
from selfsup.subsets import split_indices


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=Path("data/dataset"))
    p.add_argument("--arch", default="nets.fast_cnn:build")
    p.add_argument("--stem", default="cifar")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    seed_everything(a.seed)
    ds, meta = load_dataset(a.dataset)
    val, lab = split_indices(ds.train_labels, a.seed, 0.1, a.fraction)
    device = torch.device("cpu")
    extractor, feat_dim = build_extractor(a.arch, a.stem)
    torch.manual_seed(a.seed)
    model = Classifier(extractor, feat_dim, len(ds.classes))
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    (tx, ty), (vx, vy), (sx, sy) = labelled_images(ds, lab, val, device, "never")
    ty = torch.from_numpy(ty)
    steps = math.ceil((len(ds.train_labels) - len(val)) / a.batch)
    trainer = Trainer(model, sgd(model, a.lr, 5e-4), a.epochs * steps, int(0.2 * steps), device, label_smoothing=0.1)
    gen = device_generator(a.seed, device)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, mean, std)
    rows, start = [], time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        stats = trainer.train_epoch(labelled_batches(tx, ty, a.batch, steps, 4, mean, std, gen), steps, f"epoch {epoch}")
        val_metrics = classification_metrics(trainer.predict(chunks(vx, 500, norm)), vy)
        rows.append({"epoch": epoch, "train_loss": stats["loss"], "val_f1_macro": val_metrics["f1_macro"],
                     "seconds": stats["seconds"], "images_per_s": stats["images_per_s"]})
        print(json.dumps(rows[-1]), flush=True)
    test = classification_metrics(trainer.predict(chunks(sx, 500, norm)), sy)
    result = {"args": {k: str(v) for k, v in vars(a).items()}, "epochs": rows, "test_f1_macro_last_epoch": test["f1_macro"],
              "seconds": time.perf_counter() - start}
    print(json.dumps(result))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
