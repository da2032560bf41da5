"""Stage `linear_probe`: the standard self-supervised evaluation beside fine-tuning.

For each seed in `seeds`: a frozen extractor, either the pretrained one (models/pretrained.pt) or a random
one drawn from the seed exactly as `finetune@scratch` draws it, and a logistic regression on its features
of the labelled fraction. `probe.C` is a grid of inverse regularisation strengths; the one with the best
validation macro-F1 is kept and scored on test. The pretrained extractor is the same for every seed (one
pretraining), so its probe differs between seeds only if the fit does; the random one differs by seed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from stages.augment import normalize
from stages.common import (announce, describe_device, device_from_params, load_params, param, run_stage, save_json,
                           seed_everything)
from stages.data import labelled_images, load_dataset
from stages.engine import resolve_precision
from stages.models import build_extractor, load_extractor
from stages.probe import frozen_features, linear_probe

PRETRAINED = Path("models/pretrained.pt")
OUT = Path("metrics/linear_probe.json")
CALIBRATION_IMAGES = 5000  # labelled training images (labels unused) that re-estimate BatchNorm statistics


def main() -> None:
    start = time.perf_counter()
    params = load_params()
    device = device_from_params(params)
    precision = resolve_precision(param(params, "precision"), device)
    announce("linear_probe", device, precision)
    seeds = param(params, "seeds")  # lists' items are checked with every param (stages/schema.py)
    cs = param(params, "probe.C")
    max_iter = param(params, "probe.max_iter")
    batch = param(params, "probe.batch_size")
    arch, stem = param(params, "model.arch"), param(params, "model.stem")

    dataset, meta = load_dataset(Path("data/dataset"))
    labelled = np.load("data/splits/labelled.npy")
    validation = np.load("data/splits/validation.npy")
    n_classes = len(dataset.classes)
    mean = torch.tensor(meta["mean"], device=device)
    std = torch.tensor(meta["std"], device=device)
    images, labels = zip(*labelled_images(dataset, labelled, validation, device, param(params, "stream")))
    calibration = images[0][:CALIBRATION_IMAGES]

    def probe(extractor: torch.nn.Module) -> dict:
        feats = frozen_features(extractor, images, calibration, batch, lambda x: normalize(x, mean, std), device,
                                precision)
        return linear_probe(*zip(feats, labels), cs=cs, n_classes=n_classes, max_iter=max_iter)

    pretrained = probe(load_extractor(PRETRAINED, arch, stem, param(params, "pretext.task"))[0])
    results: dict = {"scratch": [], "pretrained": []}
    for seed in seeds:
        seed_everything(seed)
        results["scratch"].append({"seed": seed, **probe(build_extractor(arch, stem)[0])})
        # one pretrained extractor and a deterministic fit: the same numbers for every seed
        results["pretrained"].append({"seed": seed, **pretrained})
        print(f"linear_probe seed {seed}: test macro-F1 random extractor {results['scratch'][-1]['test']['f1_macro']:.4f}, "
              f"pretrained {pretrained['test']['f1_macro']:.4f}")
    results["labelled_size"] = int(len(labelled))
    results["device"] = describe_device(device)
    results["wall_seconds"] = time.perf_counter() - start
    save_json(results, OUT)


if __name__ == "__main__":
    run_stage(main, outputs=[OUT])
