"""Stage `download`: fetch the dataset, verify it, store it as uint8 arrays in data/dataset/.

`data.source` picks the reader: cifar10, cifar100 or stl10 from their official archives (`data.url` empty:
the official URL and md5; or a local copy, with `data.md5`), or `folder`, the user's own images at
`data.path`. `data.image_size` resizes every image to that square size; empty keeps the source's own.
"""

from __future__ import annotations

from pathlib import Path

from selfsup.sources import (
    OFFICIAL,
    fetch,
    folder_files,
    read_archive,
    read_cifar10,
    read_cifar100,
    read_image_folder,
    read_stl10,
    resize_batch,

)
from selfsup.core import paths
from selfsup.core.dataset import save_dataset
from selfsup.core.params import UserError, load_params, param
from selfsup.core.stage import run_stage

OUT = paths.DATASET
RAW = Path("data/raw")


def main() -> None:
    params = load_params()
    source = param(params, "data.source")
    size = param(params, "data.image_size")
    if source == "folder":
        raw_path = param(params, "data.path")
        if not raw_path:
            raise UserError("param 'data.path' is empty: with data.source=folder, set it to a directory or "
                            "archive holding train/<class>/ and test/<class>/ (and optionally unlabeled/)")
        path = Path(raw_path).expanduser()
        dataset = read_image_folder(folder_files(path), path, size)
        origin = str(path)
    else:
        url = param(params, "data.url") or ""
        md5 = param(params, "data.md5") or None
        if not url:
            url, md5 = OFFICIAL[source]
        archive = fetch(url, md5, RAW)
        if source == "stl10":
            OUT.mkdir(parents=True, exist_ok=True)
            dataset = read_stl10(archive, size, OUT / "unlabeled_images.npy")
        else:
            reader = read_cifar10 if source == "cifar10" else read_cifar100
            dataset = reader(read_archive(archive), archive)
            dataset.train_images = resize_batch(dataset.train_images, size)
            dataset.test_images = resize_batch(dataset.test_images, size)
        origin = url
    save_dataset(dataset, OUT, origin)
    extra = f", {len(dataset.unlabeled_images)} unlabeled" if dataset.unlabeled_images is not None else ""
    print(f"download: {len(dataset.train_labels)} train and {len(dataset.test_labels)} test images{extra}, "
          f"{len(dataset.classes)} classes, {dataset.train_images.shape[-1]}px -> {OUT}")


if __name__ == "__main__":
    run_stage(main, outputs=[OUT])
