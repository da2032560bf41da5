"""Stage `linear_probe@{seed}`: the standard self-supervised evaluation beside fine-tuning.

Once per seed in `seeds` (`--seed`), on that seed's split: two frozen extractors, the seed's own pretraining
(models/pretrained/seed{seed}.pt) and a random one drawn from the seed exactly as `finetune_scratch` draws it,
each with a logistic regression on its features of the labelled fraction (`probe.grid`: the last pool's
grid x grid map, not one vector). `probe.C` is a grid of inverse
regularisation strengths; the one with the best validation macro-F1 is kept and scored on test. That choice
reads no more validation labels than the run trains on: per class, at most as many validation images as the
labelled fraction holds (450 at 1 %, all 5,000 from 10 % up on CIFAR-10). On the same
features, the weighted k-nearest-neighbour classifier of the labelled fraction (k 20, temperature 0.07, as
solo-learn; no training, no choice), scored on validation and test. BatchNorm statistics are
re-estimated first on `probe.calibration_images` labelled training images (labels unused).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from selfsup.core import paths
from selfsup.training.augment import normalize
from selfsup.core.dataset import load_dataset
from selfsup.training.image_store import labelled_images
from selfsup.training.devices import announce, describe_device, device_from_params, numerics, seed_everything
from selfsup.core.files import save_json
from selfsup.linear_eval import frozen_features, knn_eval, linear_probe
from selfsup.training.models import build_extractor, load_extractor
from selfsup.core.params import load_params, param
from selfsup.stage import run_stage
from selfsup.subsets import capped_per_class


def main(seed: int) -> None:
    start = time.perf_counter()
    params = load_params()
    device = device_from_params(params)
    announce(f"linear_probe seed {seed}", device, "fp32")  # probe features are fp32 whatever `precision` says
    cs = param(params, "probe.C")  # lists' items are checked with every param (selfsup/schema.py)
    max_iter = param(params, "probe.max_iter")
    batch = param(params, "probe.batch_size")
    grid = param(params, "probe.grid")
    arch, stem = param(params, "model.arch"), param(params, "model.stem")

    dataset, meta = load_dataset(paths.DATASET)
    labelled = paths.load_indices(paths.labelled(seed))
    validation = paths.load_indices(paths.validation(seed))
    n_classes = len(dataset.classes)
    mean = torch.tensor(meta["mean"], device=device)
    std = torch.tensor(meta["std"], device=device)
    images, labels = zip(*labelled_images(dataset, labelled, validation, device, param(params, "stream")))
    calibration = images[0][:param(params, "probe.calibration_images")]
    caps = dict(zip(*(x.tolist() for x in np.unique(labels[0], return_counts=True))))
    choose_on = capped_per_class(labels[1], caps)  # the validation images the probe's C is chosen on

    def probe(extractor: torch.nn.Module) -> dict:
        feats = frozen_features(extractor, images, calibration, batch, lambda x: normalize(x, mean, std), device,
                                grid)
        sets = list(zip(feats, labels))
        capped = (sets[0], (sets[1][0][choose_on], sets[1][1][choose_on]), sets[2])
        return linear_probe(*capped, cs=cs, n_classes=n_classes, max_iter=max_iter) | {
            "knn": knn_eval(*sets, n_classes=n_classes), "selection_images": int(len(choose_on))}

    seed_everything(seed)
    results = {"seed": seed, "scratch": probe(build_extractor(arch, stem)[0]),
               "pretrained": probe(load_extractor(paths.pretrained(seed), arch, stem, param(params, "pretext.task"))[0])}
    print(f"linear_probe seed {seed}: test macro-F1 random extractor {results['scratch']['test']['f1_macro']:.4f}, "
          f"pretrained {results['pretrained']['test']['f1_macro']:.4f}; kNN "
          f"{results['scratch']['knn']['test']['f1_macro']:.4f} and {results['pretrained']['knn']['test']['f1_macro']:.4f}")
    results["labelled_size"] = int(len(labelled))
    results["device"] = describe_device(device)
    results["numerics"] = numerics(device, "fp32", 1, False)  # probes: one process, fp32, eager
    results["wall_seconds"] = time.perf_counter() - start
    save_json(results, paths.probe_result(seed))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` param (dvc.yaml passes each)")
    args = parser.parse_args()
    run_stage(lambda: main(args.seed), outputs=[paths.probe_result(args.seed)])
