"""Stage `download`: fetch the dataset, verify it, store it as uint8 arrays in data/dataset/."""

from __future__ import annotations

from pathlib import Path

from stages.common import UserError, load_params, param, run_stage
from stages.data import fetch, folder_files, read_archive, read_cifar10, read_image_folder, save_dataset

OUT = Path("data/dataset")
RAW = Path("data/raw")


def main() -> None:
    params = load_params()
    source = param(params, "data.source", str, choices=["cifar10", "folder"])
    if source == "cifar10":
        url = param(params, "data.url", str)
        md5 = param(params, "data.md5", (str, type(None)))
        archive = fetch(url, md5, RAW)
        dataset = read_cifar10(read_archive(archive), archive)
        origin = url
    else:
        raw_path = param(params, "data.path", str)
        if not raw_path:
            raise UserError("param 'data.path' is empty: with data.source=folder, set it to a directory or "
                            "archive holding train/<class>/ and test/<class>/")
        size = param(params, "data.image_size", int, low=8)
        path = Path(raw_path).expanduser()
        dataset = read_image_folder(folder_files(path), path, size)
        origin = str(path)
    save_dataset(dataset, OUT, origin)
    print(f"download: {len(dataset.train_labels)} train and {len(dataset.test_labels)} test images, "
          f"{len(dataset.classes)} classes -> {OUT}")


if __name__ == "__main__":
    run_stage(main, outputs=[OUT])
