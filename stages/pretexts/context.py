"""Pretext `context`: context prediction (Doersch, Gupta & Efros, 2015) on small images.

Each image is upscaled, a 3x3 grid of patches is laid on it at a random place, and the network sees the
centre patch and one of its 8 neighbours, sampled per example, and predicts which of the 8 it is. The
shortcuts the paper found, and the ones 32x32 JPEG-re-encoded data adds, are closed here:

- a `gap` between patches and a per-patch `jitter`, so edges and lines cannot simply be continued;
- colour is dropped to gray (chromatic aberration, and JPEG's 16x16 chroma blocks, would leak position);
- each patch is normalised on its own (no brightness or contrast cue across patches);
- a random share of patches is scaled down and up again (so sharpness and block edges mean nothing);
- the grid stride is, by default, a multiple of 8 source pixels: 8x8 JPEG block edges sit at the same
  phase in every patch and say nothing about position;
- no pad-and-crop augmentation before cutting (it would mark border patches).

The grid geometry (`pretext.upscale`, `patch_size`, `gap`, `jitter`, `rescale_*`) is shared with `jigsaw`,
which cuts the same 3x3 grid and so needs the same defences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stages.augment import crop
from stages.common import UserError, param
from stages.engine import Batch
from stages.pretexts.base import ClassifierHead, PretextTask

# (row, column) offset of each neighbour from the centre, in grid cells; the label is the index here.
OFFSETS = torch.tensor([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


@dataclass(frozen=True)
class Geometry:
    upscale: int          # the image is resized by this factor before the grid is cut
    patch_size: int       # side of a patch, in upscaled pixels (also the extractor's input size)
    gap: int              # nominal space between neighbouring patches, in upscaled pixels
    jitter: int           # each patch moves by up to this many pixels in each direction
    rescale_prob: float   # share of patches scaled down and up again
    rescale_min: float    # smallest such scale factor

    @property
    def stride(self) -> int:
        return self.patch_size + self.gap

    @property
    def extent(self) -> int:
        """Side of the region the grid can touch, jitter included."""
        return 3 * self.patch_size + 2 * self.gap + 2 * self.jitter

    def check(self, image_size: int) -> None:
        side = image_size * self.upscale
        if self.extent > side:
            raise UserError(f"pretext grid needs {self.extent}px (3*patch_size + 2*gap + 2*jitter) but the "
                            f"upscaled image is {side}px: lower pretext.patch_size/gap/jitter or raise "
                            f"pretext.upscale")
        if self.gap < 2 * self.jitter:
            raise UserError(f"pretext.gap={self.gap} must be >= 2*pretext.jitter={2 * self.jitter}, "
                            f"or jittered patches could touch")

    @classmethod
    def from_params(cls, params: dict) -> Geometry:
        return cls(
            upscale=param(params, "pretext.upscale"),
            patch_size=param(params, "pretext.patch_size"),
            gap=param(params, "pretext.gap"),
            jitter=param(params, "pretext.jitter"),
            rescale_prob=param(params, "pretext.rescale_prob"),
            rescale_min=param(params, "pretext.rescale_min"),
        )


def sample_positions(n: int, side: int, geo: Geometry, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-left corners (n x 2, row/col) of the centre and the neighbour patch, and the labels (0..7)."""
    def randint(low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=generator, device=device)

    slack = side - geo.extent
    origin = randint(0, slack + 1, (n, 2)) + geo.jitter
    labels = randint(0, 8, (n,))
    centre = origin + geo.stride
    neighbour = centre + OFFSETS.to(device)[labels] * geo.stride
    j = geo.jitter
    centre = centre + randint(-j, j + 1, (n, 2))
    neighbour = neighbour + randint(-j, j + 1, (n, 2))
    return centre, neighbour, labels


def _rescale(patches: torch.Tensor, geo: Geometry, generator: torch.Generator | None) -> torch.Tensor:
    if geo.rescale_prob <= 0 or geo.rescale_min >= 1:
        return patches
    n, _, p, _ = patches.shape
    scale = random.uniform(geo.rescale_min, 1.0)  # one size per batch, from the host RNG: no device sync
    small = max(2, int(round(p * scale)))
    blurred = F.interpolate(F.interpolate(patches, size=small, mode="bilinear", antialias=True,
                                          align_corners=False),
                            size=p, mode="bilinear", align_corners=False)
    chosen = torch.rand(n, generator=generator, device=patches.device) < geo.rescale_prob
    return torch.where(chosen.view(n, 1, 1, 1), blurred, patches)


def _standardise(patches: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    mean = patches.mean(dim=(1, 2, 3), keepdim=True)
    std = patches.std(dim=(1, 2, 3), keepdim=True)
    return (patches - mean) / (std + eps)


def gray_upscaled(images_uint8: torch.Tensor, upscale: int) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float gray N x 1 x (H*upscale) x (W*upscale) in [0, 1]."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=images_uint8.device).view(1, 3, 1, 1)
    gray = (images_uint8.float() * weights).sum(1, keepdim=True) / 255.0
    if upscale == 1:
        return gray
    h, w = gray.shape[-2:]
    return F.interpolate(gray, size=(h * upscale, w * upscale), mode="bilinear", align_corners=False)


def finish_patches(patches: torch.Tensor, geo: Geometry, generator: torch.Generator | None) -> torch.Tensor:
    """Gray patches (M x 1 x P x P) -> rescaled at random, standardised each on its own, as 3 channels."""
    return _standardise(_rescale(patches, geo, generator)).expand(-1, 3, -1, -1)


def make_pairs(images_uint8: torch.Tensor, geo: Geometry, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """From a uint8 batch (N x 3 x H x W) to pretext inputs (N x 2 x 3 x P x P) and labels (N).

    `generator` must live on the images' device."""
    n = images_uint8.shape[0]
    big = gray_upscaled(images_uint8, geo.upscale)
    centre, neighbour, labels = sample_positions(n, big.shape[-1], geo, generator, images_uint8.device)
    p = geo.patch_size
    patches = torch.cat([crop(big, centre[:, 0], centre[:, 1], p, p),
                         crop(big, neighbour[:, 0], neighbour[:, 1], p, p)])
    patches = finish_patches(patches, geo, generator)
    return torch.stack([patches[:n], patches[n:]], dim=1), labels


class Context(PretextTask):
    """Which of the 8 neighbours of the centre patch is the second patch? Chance 1/8."""

    name = "context"
    chance = 1 / 8

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        self.geo = Geometry.from_params(params)
        self.geo.check(image_size)

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        return ClassifierHead(extractor, feat_dim, views=2, classes=8)

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        return make_pairs(images, self.geo, generator)
