"""Every data source on archives and folders the tests build: CIFAR-100, STL-10 (unlabeled images streamed
to a memory-mapped array), image folders with unlabeled/ images, resizing, and the official URLs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import sources as data
from selfsup.core import dataset
from selfsup.core.dataset import Dataset, load_dataset, save_dataset
from selfsup.sources import (
    PUBLIC,
    fetch,
    files_of,
    read_archive,
    read_cifar100,
    read_image_folder,
    read_stl10,
    resize_batch,
)
from selfsup.training.image_store import ImageStore, image_bytes, labelled_images, should_stream
from selfsup.core.params import UserError
from tests.synthetic import CLASSES, HARDWARE, cifar100_archive, declared_params, image_folder, images, stl10_archive


def test_cifar100_archive(tmp_path):
    path = tmp_path / "c100.tar.gz"
    cifar100_archive(path, n_train=200, n_test=100)
    ds = read_cifar100(read_archive(path), path)
    assert ds.train_images.shape == (200, 3, 32, 32) and len(ds.classes) == 100
    assert ds.classes[7] == "fine_07" and ds.train_labels.max() == 99
    assert ds.unlabeled_images is None


def test_stl10_archive_orientation_labels_and_unlabeled(tmp_path):
    path = tmp_path / "stl.tar.gz"
    stl10_archive(path, n_train=20, n_test=10, n_unlabeled=30)
    out = tmp_path / "ds" / "unlabeled_images.npy"
    out.parent.mkdir()
    ds = read_stl10(path, None, out)
    expected = images(np.arange(20) % 10, 0, 96)
    assert np.array_equal(ds.train_images, expected)  # column-major storage undone: not transposed
    assert ds.train_labels.tolist() == (np.arange(20) % 10).tolist()  # 1..10 on disk -> 0..9
    assert ds.classes == CLASSES
    assert isinstance(ds.unlabeled_images, np.memmap) and ds.unlabeled_images.shape == (30, 3, 96, 96)
    assert np.array_equal(ds.unlabeled_images, images(np.arange(30) % 10, 2, 96))
    save_dataset(ds, out.parent, "stl")
    loaded, meta = load_dataset(out.parent)
    assert meta["unlabeled_size"] == 30 and meta["image_size"] == 96
    assert isinstance(loaded.unlabeled_images, np.memmap)


def test_stl10_resized_while_streaming(tmp_path):
    path = tmp_path / "stl.tar.gz"
    stl10_archive(path, n_train=10, n_test=10, n_unlabeled=25)
    ds = read_stl10(path, 32, tmp_path / "u.npy")
    assert ds.train_images.shape == (10, 3, 32, 32) and ds.unlabeled_images.shape == (25, 3, 32, 32)
    chunked = data._stl_unlabeled(open_member(path, "unlabeled_X.bin"), 25 * data.STL_BYTES, "u", 32,
                                  tmp_path / "u2.npy", chunk=7)
    assert np.array_equal(chunked, ds.unlabeled_images)  # chunk boundaries change nothing


def open_member(path, base):
    import tarfile
    tf = tarfile.open(path)
    return tf.extractfile(next(m for m in tf if m.name.endswith(base)))


def test_truncated_stl10_is_a_user_error(tmp_path):
    path = tmp_path / "stl.tar.gz"
    stl10_archive(path)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated|not a readable archive"):
        read_stl10(cut, None, tmp_path / "u.npy")
    assert not (tmp_path / "u.npy").exists()


def test_folder_with_unlabeled_images_and_resizing(tmp_path):
    root = image_folder(tmp_path / "f", per_class=3, classes=2, size=40)
    (root / "unlabeled" / "batch1").mkdir(parents=True)
    for i, img in enumerate(images(np.zeros(5, int), 3, 40)):
        Image.fromarray(img.transpose(1, 2, 0)).save(root / "unlabeled" / "batch1" / f"{i}.jpg")
    ds = read_image_folder(files_of(root), root, None)
    assert ds.train_images.shape == (6, 3, 40, 40) and ds.unlabeled_images.shape == (5, 3, 40, 40)
    small = read_image_folder(files_of(root), root, 16)
    assert small.train_images.shape[-1] == 16 and small.unlabeled_images.shape[-1] == 16


def test_folder_of_mixed_sizes_needs_image_size(tmp_path):
    root = image_folder(tmp_path / "f", per_class=2, classes=2, size=32)
    Image.new("RGBA", (48, 40)).save(root / "train" / CLASSES[0] / "odd.png")
    with pytest.raises(UserError, match="data.image_size"):
        read_image_folder(files_of(root), root, None)
    ds = read_image_folder(files_of(root), root, 32)  # resized, RGBA made RGB
    assert ds.train_images.shape == (5, 3, 32, 32)


def test_resize_batch():
    x = np.full((2, 3, 96, 96), 200, dtype=np.uint8)
    assert resize_batch(x, 32).shape == (2, 3, 32, 32) and (resize_batch(x, 32) == 200).all()
    assert resize_batch(x, None) is not None and resize_batch(x, 96).shape == x.shape


@pytest.mark.parametrize("source", ["cifar10", "cifar100", "stl10"])
def test_public_url_and_md5_are_used_by_default(tmp_path, monkeypatch, source):
    # the real download code runs; only the network is replaced by a file the test writes
    seen = {}

    def fake_download(url, root, filename):
        seen["url"] = url
        (tmp_path / "raw").mkdir(exist_ok=True)
        (tmp_path / "raw" / filename).write_bytes(b"not the real archive")

    monkeypatch.setattr(data, "download_url", fake_download)
    url, md5 = PUBLIC[source]
    assert url.startswith("http") and len(md5) == 32
    with pytest.raises(UserError, match=f"expected {md5}: the file is corrupt or not data.source={source}"):
        fetch(url, md5, tmp_path / "raw", source)
    assert seen["url"] == url


@pytest.mark.parametrize("stream", [False, True])
def test_image_store_streams_the_same_batches(tmp_path, stream):
    a = np.arange(6 * 3 * 4 * 4, dtype=np.uint8).reshape(6, 3, 4, 4)
    np.save(tmp_path / "b.npy", a[::-1] + 1)
    b = np.load(tmp_path / "b.npy", mmap_mode="r")
    store = ImageStore([a, b], torch.device("cpu"), stream=stream)
    assert len(store) == 12 and store.stream == stream
    batch = store.take(torch.tensor([11, 0, 7, 3]))
    expected = np.stack([a[0], a[3], b[1], b[5]])  # sorted indices, across both arrays
    assert torch.equal(batch, torch.from_numpy(expected))
    assert torch.equal(store[2:4], torch.from_numpy(a[2:4]))


@pytest.mark.parametrize("stream", [False, True])
def test_image_store_keeps_only_the_given_rows(tmp_path, stream):
    # pretraining leaves the validation images out: they must never be drawn, in memory or streamed
    a = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(3, 1)
    np.save(tmp_path / "a.npy", a)
    store = ImageStore([np.load(tmp_path / "a.npy", mmap_mode="r"), a[:2] + 100], torch.device("cpu"),
                       stream=stream, rows=[np.array([7, 1, 4]), None])
    assert len(store) == 5
    everything = store.take(torch.arange(5))[:, 0, 0, 0].tolist()
    assert everything == [1, 4, 7, 100, 101]


def test_prefetched_keeps_order_and_works_ahead():
    from selfsup.training.image_store import prefetched
    made, done = [], []

    def produce():
        for i in range(4):
            made.append(time.perf_counter())
            yield i

    seen = []
    for item in prefetched(produce()):
        time.sleep(0.05)  # the "training step": the next item is made meanwhile
        seen.append(item)
        done.append(time.perf_counter())
    assert seen == [0, 1, 2, 3]
    assert all(made[k + 1] < done[k] for k in range(3))  # item k+1 was made before step k ended
    with pytest.raises(ValueError, match="bad batch"):
        list(prefetched(iter_raising()))


def iter_raising():
    yield 1
    raise ValueError("bad batch")


def test_should_stream():
    cpu = torch.device("cpu")
    assert should_stream("always", 1, cpu)
    assert not should_stream("never", 1 << 60, cpu)
    assert not should_stream("auto", 1, cpu)
    assert should_stream("auto", 1 << 60, cpu)
    a = np.zeros((10, 3, 4, 4), dtype=np.uint8)
    assert image_bytes([a, a], [np.array([1, 2]), None]) == 2 * 48 + 480


@pytest.mark.parametrize("stream", [False, True])
def test_labelled_images_pair_rows_with_labels(tmp_path, stream):
    # fine-tune and probe read their three sets through the same store, streamed or held
    labels = np.arange(20) % 10
    ds = Dataset(images(labels, 0), labels, images(labels[:10], 1), labels[:10], CLASSES)
    save_dataset(ds, tmp_path / "ds", "synthetic")
    loaded, _ = load_dataset(tmp_path / "ds")
    sets = labelled_images(loaded, np.array([7, 2, 15]), np.array([9, 0]), torch.device("cpu"),
                           "always" if stream else "never")
    for (store, y), rows, source in zip(sets, ([2, 7, 15], [0, 9], list(range(10))),
                                        (ds.train_images, ds.train_images, ds.test_images)):
        assert store.stream == stream and len(store) == len(rows) and y.tolist() == [labels[r] for r in rows]
        assert torch.equal(store[0:len(rows)], torch.from_numpy(source[rows]))


def test_pretraining_store_includes_unlabeled_images(tmp_path):
    labels = np.arange(10) % 10
    ds = Dataset(images(labels, 0), labels, images(labels, 1), labels, CLASSES, images(labels[:4], 2))
    save_dataset(ds, tmp_path / "ds", "synthetic")
    loaded, _ = load_dataset(tmp_path / "ds")
    store = ImageStore([loaded.train_images, loaded.unlabeled_images], torch.device("cpu"), stream=True)
    assert len(store) == 14
    assert torch.equal(store.take(torch.tensor([13])), torch.from_numpy(ds.unlabeled_images[3:4]))


def test_channel_stats_match_numpy():
    x = images(np.arange(30) % 10, 0)
    mean, std = dataset.channel_stats(x, chunk=7)
    ref = x.astype(np.float64) / 255
    assert mean == pytest.approx(ref.mean(axis=(0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(ref.std(axis=(0, 2, 3)).tolist(), abs=1e-5)


def test_non_image_files_are_skipped_and_said(tmp_path, capsys):
    root = image_folder(tmp_path / "f", per_class=2, classes=2)
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image")
    (root / "README").write_text("about")
    ds = read_image_folder(files_of(root), root, None)
    assert len(ds.train_labels) == 4
    assert "skipping 2 files that are not images" in capsys.readouterr().err
    (root / "train" / CLASSES[0] / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png is not a readable image"):
        read_image_folder(files_of(root), root, None)


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_an_empty_class_folder_is_an_error(tmp_path, content):
    root = image_folder(tmp_path / "f", per_class=2, classes=2)
    empty = root / "train" / "zebra"
    empty.mkdir()
    if content:
        (empty / content).write_text("no images here")
    with pytest.raises(UserError, match="train/zebra/ has no images"):
        read_image_folder(files_of(root), root, None)


@pytest.mark.e2e
def test_stl10_through_the_stages_pretrains_on_streamed_unlabeled_images(tmp_path):
    """download (official-layout archive at data_location, resized), split, then pretrain with stream=always: the
    unlabeled images reach pretraining from the memory-mapped array, and only there."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    archive = tmp_path / "stl10_binary.tar.gz"
    stl10_archive(archive, n_train=60, n_test=20, n_unlabeled=40)
    ws = tmp_path / "ws"
    for package in ("stages", "selfsup"):
        shutil.copytree(root / package, ws / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = declared_params()
    params["data"].update(source="stl10", image_size=32)
    (ws / "hardware.yaml").write_text(yaml.safe_dump(HARDWARE | {"stream": "always", "data_location": str(archive)}))
    params["model"]["stem"] = "imagenet"
    params["pretext"].update(task="rotation", rotation={"crop_padding": 4}, epochs=1, batch_size=25, probe_size=20,
                             eval_batch_size=50)
    params["split"]["val_fraction"] = 0.34
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ws)}
    for args in (["stages.download"], ["stages.split", "--seed", "0"], ["stages.pretrain", "--seed", "0"]):
        proc = subprocess.run([sys.executable, "-m", *args], cwd=ws, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((ws / "data" / "dataset" / "meta.json").read_text())
    assert (meta["train_size"], meta["test_size"], meta["unlabeled_size"], meta["image_size"]) == (60, 20, 40, 32)
    summary = json.loads((ws / "metrics" / "runs" / "pretrain" / "seed0" / "metrics.json").read_text())
    split = json.loads((ws / "data" / "splits" / "seed0" / "counts.json").read_text())
    # every unlabeled and training image but the held-out validation ones
    assert summary["pretext"]["images"] == 100 - split["validation_size"] and summary["pretext"]["streamed"] is True
    assert split["validation_size"] + split["pool_size"] == 60  # labels come from the labelled images only


def test_a_stale_unlabeled_array_is_removed(tmp_path):
    # an STL-10 run left unlabeled images; a CIFAR dataset saved over it (outside DVC) must not keep them
    labels = np.arange(10) % 10
    save_dataset(Dataset(images(labels, 0), labels, images(labels, 1), labels, CLASSES, images(labels[:4], 2)),
                 tmp_path / "ds", "stl10")
    assert load_dataset(tmp_path / "ds")[0].unlabeled_images is not None
    save_dataset(Dataset(images(labels, 0), labels, images(labels, 1), labels, CLASSES), tmp_path / "ds", "cifar10")
    assert load_dataset(tmp_path / "ds")[0].unlabeled_images is None
    assert not (tmp_path / "ds" / "unlabeled_images.npy").exists()
