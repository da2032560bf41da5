"""Sizing a profile: one scratch fine-tune with the project's engine, validation macro-F1 after every epoch.

    python -m tools.size_finetune --fraction 0.1 --epochs 12 --out size.json

The recipe is params.yaml's (`model`, `finetune`, `split.val_fraction`), so compose it for the profile first
(any `dvc exp run -S profile=cpu` leaves it so); the flags override the epochs and learning rate. Reads a
downloaded dataset (`data/dataset`, or --dataset) and splits it as `split@<seed>` does; an epoch is one pass
over the 100 % labelled pool, as in `finetune`. A sizing tool chooses, so it never reads the test set (a test
locks it away). Not a stage and not a test: its numbers are in docs/speed.md ("Sizing the cpu profile").
"""

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from selfsup.training.augment import labelled_batches, normalize
from selfsup.core.dataset import load_dataset
from selfsup.training.image_store import ImageStore
from selfsup.training.devices import device_generator, seed_everything
from selfsup.training.distributed import Dist
from selfsup.training.engine import chunks, classification_metrics, resolve_precision
from selfsup.training.models import Classifier, build_extractor
from selfsup.core.params import load_params, param
from selfsup.subsets import split_indices
from selfsup.loop.training_stage import Recipe, TrainingStage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=Path("data/dataset"))
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--epochs", type=int, help="default: finetune.epochs")
    p.add_argument("--lr", type=float, help="default: finetune.lr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    params = load_params()
    recipe = Recipe.read(params, "finetune")
    recipe = dataclasses.replace(recipe, epochs=a.epochs or recipe.epochs, lr=a.lr or recipe.lr)
    arch, stem = param(params, "model.arch"), param(params, "model.stem")
    seed_everything(a.seed)
    ds, meta = load_dataset(a.dataset)
    val, lab = split_indices(ds.train_labels, a.seed, param(params, "split.val_fraction"), a.fraction)
    device = torch.device("cpu")
    extractor, feat_dim = build_extractor(arch, stem)
    torch.manual_seed(a.seed)
    model = Classifier(extractor, feat_dim, len(ds.classes))
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    tx = ImageStore([ds.train_images], device, False, [lab])
    ty = torch.from_numpy(ds.train_labels[tx.rows[0]])
    vx = ImageStore([ds.train_images], device, False, [val])
    vy = ds.train_labels[vx.rows[0]]
    steps = math.ceil((len(ds.train_labels) - len(val)) / recipe.batch_size)
    precision = resolve_precision(param(params, "precision"), device)  # as the stages resolve it: fp32 here
    stage = TrainingStage(params, Dist(), device, precision, time.perf_counter())
    trainer = recipe.trainer(model, steps, stage, label_smoothing=param(params, "finetune.label_smoothing"))
    gen = device_generator(a.seed, device)
    pad = param(params, "finetune.crop_padding")

    def norm(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, mean, std)
    rows, start = [], time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        batches = labelled_batches(tx, ty, recipe.batch_size, steps, pad, mean, std, gen)
        stats = trainer.train_epoch(batches, steps, f"epoch {epoch}")
        val_metrics = classification_metrics(trainer.predict(chunks(vx, recipe.eval_batch_size, norm)), vy)
        rows.append({"epoch": epoch, "train_loss": stats["loss"], "val_f1_macro": val_metrics["f1_macro"],
                     "seconds": stats["seconds"], "images_per_s": stats["images_per_s"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"args": {k: str(v) for k, v in vars(a).items()}, "arch": arch, "recipe": dataclasses.asdict(recipe),
              "epochs": rows, "seconds": time.perf_counter() - start}
    print(json.dumps(result))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
