"""Handing a dataset's uint8 images to training: held whole on the device or streamed a batch at a time
from the memory-mapped arrays, and batches made one step ahead in a background thread."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import psutil
import torch

from selfsup.core.dataset import Dataset

T = TypeVar("T")


class ImageStore:
    """The uint8 images pretraining draws from, concatenated from several arrays (training images, unlabeled
    images): held whole on the device, or, when `stream`, left in their (memory-mapped) arrays and copied
    to the device a batch at a time. Both give the same batches: `take` sorts the indices either way.
    `rows`, parallel to `arrays`, keeps only the given (sorted) rows of an array (None: all of it)."""

    def __init__(self, arrays: Sequence[np.ndarray], device: torch.device, stream: bool,
                 rows: Sequence[np.ndarray | None] | None = None):
        rows = list(rows) if rows is not None else [None] * len(arrays)
        kept = [(a, np.arange(len(a)) if r is None else np.sort(np.asarray(r, dtype=np.int64)))
                for a, r in zip(arrays, rows)]
        kept = [(a, r) for a, r in kept if len(r)]
        self.arrays = [a for a, _ in kept]
        self.rows = [r for _, r in kept]
        self.bounds = np.cumsum([0] + [len(r) for r in self.rows])
        self.device = device
        self.stream = stream
        self.data = None
        if not stream:  # memmaps are read-only: copied; arrays already in memory are shared, not copied
            held = [torch.from_numpy(a[r] if len(r) < len(a) else a if a.flags.writeable else np.array(a))
                    for a, r in kept]
            self.data = (held[0] if len(held) == 1 else torch.cat(held)).to(device)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.sort(idx).values
        if self.data is not None:
            return self.data[idx.to(self.device)]
        flat = idx.cpu().numpy()
        parts = []
        for array, rows, low, high in zip(self.arrays, self.rows, self.bounds[:-1], self.bounds[1:]):
            chosen = flat[(flat >= low) & (flat < high)] - low
            if len(chosen):
                parts.append(array[rows[chosen]])
        batch = torch.from_numpy(np.concatenate(parts))
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def __getitem__(self, idx) -> torch.Tensor:
        """A contiguous slice or an index tensor, as a uint8 tensor on the device (rows in sorted order)."""
        if isinstance(idx, slice):
            idx = torch.arange(len(self))[idx]
        return self.take(torch.as_tensor(idx))


def labelled_images(dataset: Dataset, labelled: np.ndarray, validation: np.ndarray, device: torch.device,
                    mode: str, test: bool = True) -> list[tuple[ImageStore, np.ndarray]]:
    """(images, labels) of the labelled training rows, the validation rows and (with `test`) the test set, for
    a fine-tune or a probe: held on the device, or, when param `stream` (`mode`) says they would not fit
    there, streamed a batch at a time from the memory-mapped arrays. Rows come in sorted order. Without
    `test` the test arrays are never touched (the tools that choose budgets and recipes)."""
    sets = [(dataset.train_images, dataset.train_labels, labelled),
            (dataset.train_images, dataset.train_labels, validation)]
    if test:
        sets.append((dataset.test_images, dataset.test_labels, None))
    stream = should_stream(mode, image_bytes([x for x, _, _ in sets], [r for _, _, r in sets]), device)
    stores = [(ImageStore([x], device, stream, [r]), y) for x, y, r in sets]
    return [(store, y[store.rows[0]]) for store, y in stores]  # the labels of the rows the store keeps


_END = object()


def prefetched(items: Iterable[T]) -> Iterator[T]:
    """Yield `items` in order, making the next one in a background thread while the caller works on the
    current one (a double buffer): a streamed batch is read from its memory-mapped arrays, copied to the
    device and turned into pretext inputs during the previous step. Items are made one at a time and in
    order, so random draws happen in the same sequence as without prefetching."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = pool.submit(next, iterator, _END)
        while True:
            item = pending.result()
            if item is _END:
                return
            pending = pool.submit(next, iterator, _END)
            yield item


def image_bytes(arrays: Sequence[np.ndarray], rows: Sequence[np.ndarray | None] | None = None) -> int:
    """The bytes the given rows of `arrays` (all rows where None) take once copied to a device."""
    rows = list(rows) if rows is not None else [None] * len(arrays)
    return sum(a.nbytes if r is None else len(r) * (a.nbytes // max(len(a), 1)) for a, r in zip(arrays, rows))


def should_stream(mode: str, size: int, device: torch.device, share: float = 0.5) -> bool:
    """Param `stream`: `always`, `never`, or `auto`: stream when the images (`size` bytes, see
    `image_bytes`) would take more than `share` of the device's free memory (GPU memory on CUDA, available
    RAM otherwise)."""
    if mode != "auto":
        return mode == "always"
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = psutil.virtual_memory().available
    return size > share * free
