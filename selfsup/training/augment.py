"""Batched image ops on the device (crops by per-example offsets, flips, normalisation) and the
fine-tuning batch stream built from them.

Everything takes whole batches (N x C x H x W) and per-example random numbers, so one call does the work
of a DataLoader full of PIL transforms without leaving the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from selfsup.training.distributed import Dist
from selfsup.training.engine import Batch, index_batches

_ON_DEVICE: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def on_device(constant: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A module-level constant tensor on `device`, copied there once per process: copying it in every step
    would be a host-to-device transfer, and on CUDA a synchronisation, inside the training loop."""
    key = (id(constant), str(device))
    if key not in _ON_DEVICE or _ON_DEVICE[key][0] is not constant:  # the cache keeps `constant` alive
        _ON_DEVICE[key] = (constant, constant.to(device))
    return _ON_DEVICE[key][1]


def crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int,
         source: torch.Tensor | None = None) -> torch.Tensor:
    """Cut an (height x width) window at (top[i], left[i]) from image source[i] (default: image i), by one
    gather; several windows may come from one image."""
    n = top.shape[0]
    rows = top.view(n, 1) + torch.arange(height, device=images.device)
    cols = left.view(n, 1) + torch.arange(width, device=images.device)
    batch = (torch.arange(n, device=images.device) if source is None else source).view(n, 1, 1)
    out = images.permute(0, 2, 3, 1)[batch, rows.view(n, height, 1), cols.view(n, 1, width)]
    return out.permute(0, 3, 1, 2)


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard CIFAR augmentation: reflect-pad by `pad`, random crop back to size, random horizontal flip.

    `generator` must live on the images' device (random numbers are drawn there: no host sync)."""
    n, _, h, w = images.shape
    dev = images.device
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
        left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
        images = crop(padded, top, left, h, w)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)


def normalize(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in 0..255) -> float, scaled to [0, 1] and standardised per channel; the input is
    never modified."""
    x = images_uint8.float().div_(255.0) if images_uint8.dtype == torch.uint8 else images_uint8 / 255.0
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def labelled_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int, pad: int,
                     mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator, dist: Dist = Dist()
                     ) -> Iterator[Batch]:
    """Fine-tuning batches: random crop (reflect padding `pad`) and flip, then per-channel normalisation.

    Each step draws a global batch, augments all of it on the device, and yields this rank's share.
    `images` is a uint8 tensor or an `ImageStore` (which may stream); a batch's indices are sorted, so
    a streamed store reads its rows in order and images and labels stay paired either way."""
    for idx in index_batches(len(images), batch_size, steps, generator):
        idx = torch.sort(idx).values
        x = normalize(random_crop_flip(images[idx], pad, generator), mean, std)
        yield dist.take(x), dist.take(labels[idx])
