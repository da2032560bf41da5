"""Batched image ops on the device (crops by per-example offsets, flips, normalisation) and the
fine-tuning batch stream built from them.

Everything takes whole batches (N x C x H x W) and per-example random numbers, so one call does the work
of a DataLoader full of PIL transforms without leaving the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

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


def gather_pixels(images: torch.Tensor, source: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
                  ) -> torch.Tensor:
    """out[k, :, i, j] = images[source[k], :, rows[k, i, j], cols[k, i, j]], with `source` of shape (m,) and
    `rows`, `cols` broadcasting to (m, h, w): any crop, flip, reflection padding or quarter turn of a batch,
    or several windows of one image, as one gather of whole pixels, in the images' own dtype (uint8 stays
    uint8). The result is N x C x h x w in shape and channels_last in memory (the layout the gather writes;
    the engine sets the layout the network runs in)."""
    _, c, height, width = images.shape
    pixels = images.permute(0, 2, 3, 1).contiguous().view(-1, c)  # no copy when already channels_last
    flat = (source.view(-1, 1, 1) * height + rows) * width + cols
    m, h, w = flat.shape
    return pixels.index_select(0, flat.reshape(-1)).view(m, h, w, c).permute(0, 3, 1, 2)


def crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int,
         source: torch.Tensor | None = None) -> torch.Tensor:
    """Cut an (height x width) window at (top[i], left[i]) from image source[i] (default: image i), by one
    gather; several windows may come from one image."""
    n, dev = top.shape[0], images.device
    rows = top.view(n, 1, 1) + torch.arange(height, device=dev).view(1, height, 1)
    cols = left.view(n, 1, 1) + torch.arange(width, device=dev).view(1, 1, width)
    return gather_pixels(images, torch.arange(n, device=dev) if source is None else source, rows, cols)


def reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices up to size - 1 beyond either end of range(size) mapped back inside it by reflection (the
    edge pixel not repeated), as F.pad(mode="reflect") pads."""
    return (size - 1) - ((size - 1) - index.abs()).abs()


def crop_flip_indices(n: int, height: int, width: int, pad: int, generator: torch.Generator | None,
                      device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (n x height) and columns (n x width) of a random crop of each image reflect-padded by `pad`,
    flipped horizontally at random, in the unpadded image's coordinates. The random numbers are drawn in
    the order the padded-and-cropped version drew them (top, left, then flip), so both cut the same pixels."""
    rows = torch.arange(height, device=device).expand(n, height)
    cols = torch.arange(width, device=device).expand(n, width)
    if pad > 0:
        top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
        left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
        rows = reflect(rows + (top - pad).view(n, 1), height)
        cols = cols + (left - pad).view(n, 1)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    return rows, reflect(torch.where(flip.view(n, 1), cols.flip(1), cols), width)


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard CIFAR augmentation: reflect-pad by `pad`, random crop back to size, random horizontal flip,
    as one gather of the original pixels (no padded copy, no flipped copy; uint8 stays uint8).

    `generator` must live on the images' device (random numbers are drawn there: no host sync)."""
    n, _, h, w = images.shape
    rows, cols = crop_flip_indices(n, h, w, pad, generator, images.device)
    return gather_pixels(images, torch.arange(n, device=images.device), rows.view(n, h, 1), cols.view(n, 1, w))


def normalize(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
    """uint8 (or float in 0..255) -> float, scaled to [0, 1] and standardised per channel, in the input's
    memory layout or the one asked for (converted in the same copy); the input is never modified."""
    if images_uint8.dtype == torch.uint8:
        x = images_uint8.float(memory_format=memory_format).div_(255.0)
    else:
        x = images_uint8.contiguous(memory_format=memory_format) / 255.0 \
            if memory_format != torch.preserve_format else images_uint8 / 255.0
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # the same two ops, on rows of pixels with the channels innermost: per-channel constants broadcast
        # over a 3-wide innermost dimension run several times slower than over a whole row of them
        rows, pixels = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1), x.shape[2] * x.shape[3]  # a view of x
        rows.sub_(mean.reshape(-1).repeat(pixels)).div_(std.reshape(-1).repeat(pixels))
        return x
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


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
