"""Pretext `rotation`: which of 0, 90, 180, 270 degrees was the image rotated by? (Gidaris, Singh &
Komodakis, 2018.) Each image gets one rotation drawn at random, after a random crop and flip (reflect
padding `pretext.rotation.crop_padding`), so the network sees whole, colour images as in fine-tuning.
Chance 1/4.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup.training.augment import normalize, random_crop_flip
from selfsup.training.engine import Batch
from selfsup.core.params import param
from selfsup.pretexts.base import PretextTask


def rotate(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate image i by quarter_turns[i] * 90 degrees counter-clockwise, without a host sync: all four
    rotations are made and the chosen one gathered (square images)."""
    n = images.shape[0]
    turned = torch.stack([images.rot90(k, dims=(2, 3)) for k in range(4)])
    return turned[quarter_turns, torch.arange(n, device=images.device)]


class Rotation(PretextTask):
    chance = 1 / 4

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        self.pad = param(params, "pretext.rotation.crop_padding")

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        return RotationNet(extractor, feat_dim)

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        x = normalize(random_crop_flip(images, self.pad, generator), self.mean, self.std)
        turns = torch.randint(0, 4, (len(x),), generator=generator, device=x.device)
        return rotate(x, turns), turns


class RotationNet(nn.Module):
    def __init__(self, extractor: nn.Module, feat_dim: int):
        super().__init__()
        self.extractor = extractor
        self.head = nn.Linear(feat_dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(x))
