"""Pretext `rotation`: which of 0, 90, 180, 270 degrees was the image rotated by? (Gidaris, Singh &
Komodakis, 2018.) Each image gets one rotation drawn at random, after a random crop and flip (reflect
padding `pretext.rotation.crop_padding`), so the network sees whole, colour images as in fine-tuning.
Crop, flip and turn are one gather of the uint8 pixels; only the result is made float. Chance 1/4.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.training.augment import crop_flip_indices, gather_pixels, normalize
from selfsup.training.engine import Batch
from selfsup.core.params import param
from selfsup.pretexts.base import PretextTask


def rotate(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate image i by quarter_turns[i] * 90 degrees counter-clockwise (as torch.rot90 over dims (2, 3)),
    without a host sync: one gather (square images)."""
    n, _, h, w = images.shape
    rows, cols = turned_indices(torch.arange(h, device=images.device).expand(n, h),
                                torch.arange(w, device=images.device).expand(n, w), quarter_turns)
    return gather_pixels(images, torch.arange(n, device=images.device), rows, cols)


def turned_indices(rows: torch.Tensor, cols: torch.Tensor, quarter_turns: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example source rows (n x s) and columns (n x s) of a square window, turned by quarter_turns[i]
    quarter turns counter-clockwise: (n x s x s) row and column maps for `gather_pixels`. A turn by k
    takes output pixel (i, j) from (i, j), (j, s-1-i), (s-1-i, s-1-j) or (s-1-j, i) of the window."""
    n, s = rows.shape
    i = torch.arange(s, device=rows.device).view(s, 1).expand(s, s)
    j = torch.arange(s, device=rows.device).view(1, s).expand(s, s)
    back_i, back_j = s - 1 - i, s - 1 - j
    window_rows = torch.stack([i, j, back_i, back_j])[quarter_turns].view(n, s * s)  # n x s*s, window coords
    window_cols = torch.stack([j, back_i, back_j, i])[quarter_turns].view(n, s * s)
    return rows.gather(1, window_rows).view(n, s, s), cols.gather(1, window_cols).view(n, s, s)


class Rotation(PretextTask):
    chance = 1 / 4

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        self.pad = param(params, "pretext.rotation.crop_padding")

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        return RotationNet(extractor, feat_dim)

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        n, _, h, w = images.shape
        rows, cols = crop_flip_indices(n, h, w, self.pad, generator, images.device)
        turns = torch.randint(0, 4, (n,), generator=generator, device=images.device)
        rows, cols = turned_indices(rows, cols, turns)
        return normalize(gather_pixels(images, torch.arange(n, device=images.device), rows, cols), self.mean,
                         self.std), turns


class RotationNet(nn.Module):
    def __init__(self, extractor: nn.Module, feat_dim: int):
        super().__init__()
        self.extractor = extractor
        self.head = nn.Linear(feat_dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(x))
