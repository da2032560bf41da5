import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.sources import fetch, folder_files, load_batch, read_archive, read_cifar10, read_image_folder
from selfsup.core.params import UserError
from tests.synthetic import cifar_archive, image_folder


def test_md5_accepted_and_archive_read(tmp_path):
    path = tmp_path / "c.tar.gz"
    md5 = cifar_archive(path, n_train=60, n_test=20, batches=3)
    got = fetch(f"file://{path}", md5, tmp_path / "cache")
    ds = read_cifar10(read_archive(got), got)
    assert ds.train_images.shape == (60, 3, 32, 32) and ds.train_images.dtype == np.uint8
    assert ds.test_labels.shape == (20,) and ds.classes[0] == "airplane"
    assert fetch(str(path), md5, tmp_path / "cache") == path  # a plain path works too


def test_md5_mismatch_is_rejected(tmp_path):
    path = tmp_path / "c.tar.gz"
    cifar_archive(path, n_train=20, n_test=10)
    with pytest.raises(UserError, match="data.md5"):
        fetch(str(path), "0" * 32, tmp_path)


def test_missing_file_names_data_url(tmp_path):
    with pytest.raises(UserError, match="data.url"):
        fetch(str(tmp_path / "nope.tar.gz"), None, tmp_path)


def test_truncated_archive_is_a_user_error(tmp_path):
    path = tmp_path / "c.tar.gz"
    cifar_archive(path, n_train=200, n_test=50)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="truncated"):
        read_archive(path)


def _tar_with(path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    return path


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "a/../../evil"])
def test_member_escaping_target_is_refused(tmp_path, name):
    with pytest.raises(UserError, match="escapes"):
        read_archive(_tar_with(tmp_path / "x.tar.gz", name))


def test_link_member_is_refused(tmp_path):
    with pytest.raises(UserError, match="link"):
        read_archive(_tar_with(tmp_path / "x.tar.gz", "cifar-10-batches-py/data_batch_1", tarfile.SYMTYPE))


def test_zip_escape_is_refused(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../evil.png", b"x")
    with pytest.raises(UserError, match="escapes"):
        read_archive(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pwned-by-cifar-batch",))


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    marker = Path("/tmp/pwned-by-cifar-batch")
    marker.unlink(missing_ok=True)
    blob = pickle.dumps({"data": _Exploit(), "labels": [0]})
    with pytest.raises(UserError, match="crafted|safely"):
        load_batch(blob, "data_batch_1")
    assert not marker.exists()


def test_non_cifar_archive_is_named(tmp_path):
    with pytest.raises(UserError, match="not a CIFAR-10"):
        read_cifar10(read_archive(_tar_with(tmp_path / "x.tar.gz", "readme.txt")), tmp_path / "x.tar.gz")


def test_wrong_batch_layout_is_named():
    with pytest.raises(UserError, match="not a CIFAR batch"):
        from selfsup.sources import _batch_arrays
        _batch_arrays({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}, "data_batch_1")


def test_image_folder_from_directory_and_archive(tmp_path):
    root = image_folder(tmp_path / "imgs", per_class=3, classes=3)
    # mixed modes and sizes are converted and resized
    Image.new("L", (40, 20), 128).save(root / "train" / "bird" / "gray.png")
    Image.new("RGBA", (16, 16), (1, 2, 3, 4)).save(root / "train" / "bird" / "rgba.png")
    ds = read_image_folder(folder_files(root), root, 32)
    assert ds.classes == ["airplane", "automobile", "bird"]
    assert ds.train_images.shape == (11, 3, 32, 32)
    assert np.bincount(ds.train_labels).tolist() == [3, 3, 5]
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname="mydata")
    ds2 = read_image_folder(folder_files(archive), archive, 32)
    assert np.array_equal(ds.train_images, ds2.train_images)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no train/<class>"):
        read_image_folder({"foo/bar.png": b""}, tmp_path, 32)
    root = image_folder(tmp_path / "imgs", per_class=2, classes=2)
    (root / "train" / "airplane" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="broken.png"):
        read_image_folder(folder_files(root), root, 32)


def test_failed_download_leaves_nothing(tmp_path):
    # an unreachable URL (nothing listens on port 9 here): one-line error, no partial file, no empty cache dir
    cache = tmp_path / "raw"
    with pytest.raises(UserError, match="could not download data.url=http://127.0.0.1:9/c.tar.gz"):
        fetch("http://127.0.0.1:9/c.tar.gz", None, cache)
    assert not cache.exists()
