"""Stage `download`: fetch the dataset, verify it, store it as uint8 arrays in data/dataset/.

What the data is is a param: `data.source` (cifar10, cifar10-jpeg, cifar100, stl10, or your own `folder`)
and `data.digest`, the digest of its decoded images and labels, whatever container held them
(`selfsup.sources.dataset_digest`; empty: not checked). Where this machine reads it from is not:
hardware.yaml's `data_location`, empty for the source's public location (downloaded into data/raw/ and kept),
or a path or URL of a local copy (a directory, .zip or .tar.gz), so a mirror re-runs nothing and never
reaches dvc.lock. `data.image_size` resizes every image to that square size; null keeps the source's own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfsup.core import paths
from selfsup.core.dataset import save_dataset
from selfsup.core.params import UserError, load_params, param
from selfsup.stage import run_stage
from selfsup.sources import LOCATION_KNOB, PUBLIC, check_digest, fetch, read_source

OUT = paths.DATASET
RAW = Path("data/raw")


def main() -> None:
    params = load_params()
    source, declared = param(params, "data.source"), param(params, "data.digest")
    location = param(params, LOCATION_KNOB)
    if not location and source not in PUBLIC:
        raise UserError(f"data.source={source} has no public location: set {LOCATION_KNOB} in hardware.yaml to your "
                        f"images (a directory, .zip or .tar.gz with train/<class>/ and test/<class>/)")
    url, md5 = (location, None) if location else PUBLIC[source]
    path = fetch(url, md5, RAW, source)
    dataset = read_source(source, path, param(params, "data.image_size"), OUT / "unlabeled_images.npy")
    digest = check_digest(dataset, declared, url)
    if not declared:
        print(f"download: data.digest is empty, so the data is not checked; this copy is {digest} "
              f"(set data.digest to it to pin it)", file=sys.stderr)
    save_dataset(dataset, OUT, source, digest)
    extra = f", {len(dataset.unlabeled_images)} unlabeled" if dataset.unlabeled_images is not None else ""
    print(f"download: {len(dataset.train_labels)} train and {len(dataset.test_labels)} test images{extra}, "
          f"{len(dataset.classes)} classes, {dataset.train_images.shape[-1]}px, {digest} -> {OUT}")


if __name__ == "__main__":
    run_stage(main, outputs=[OUT])
