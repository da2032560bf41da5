"""Patch geometry shared by `context` and `jigsaw`: where patches of a 3x3 grid are cut, and the checks that
they fit the image.

Sizes are in pixels of the image after upscaling by `upscale` (1: native resolution). Neighbouring grid
cells are `patch_size + gap` apart and every patch moves by up to `jitter` pixels each way, so two patches
never touch and edges cannot simply be continued from one to the next. Keep the stride a multiple of 8
source pixels on JPEG-compressed data: 8x8 block edges then sit at the same phase in every patch and say
nothing about position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.training.augment import on_device
from selfsup.core.params import UserError, param

# (row, column) offset of each of the 8 neighbours from the centre, in grid cells; a label indexes it.
OFFSETS = torch.tensor([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601 weights


@dataclass(frozen=True)
class Geometry:
    upscale: int          # the image is resized by this factor before patches are cut
    patch_size: int       # side of a patch, in upscaled pixels (also the extractor's input size)
    gap: int              # nominal space between neighbouring patches, in upscaled pixels
    jitter: int           # each patch moves by up to this many pixels in each direction
    section: str = "pretext"  # where the params live, for messages

    @property
    def stride(self) -> int:
        return self.patch_size + self.gap

    @property
    def grid_extent(self) -> int:
        """Side of the region a whole 3x3 grid can touch, jitter included."""
        return 3 * self.patch_size + 2 * self.gap + 2 * self.jitter

    @property
    def pair_extent(self) -> int:
        """Side of the region a centre and a diagonal neighbour can touch, jitter included."""
        return 2 * self.patch_size + self.gap + 2 * self.jitter

    def check(self, image_size: int, extent: int, what: str) -> None:
        side = image_size * self.upscale
        s = self.section
        if extent > side:
            raise UserError(f"{what} needs {extent}px but the upscaled image is {side}px: lower "
                            f"{s}.patch_size/gap/jitter or raise {s}.upscale")
        if self.gap < 2 * self.jitter:
            raise UserError(f"{s}.gap={self.gap} must be >= 2*{s}.jitter={2 * self.jitter}, "
                            f"or jittered patches could touch")

    @classmethod
    def from_params(cls, params: dict, section: str) -> Geometry:
        return cls(upscale=param(params, f"{section}.upscale"), patch_size=param(params, f"{section}.patch_size"),
                   gap=param(params, f"{section}.gap"), jitter=param(params, f"{section}.jitter"), section=section)


def upscaled(images: torch.Tensor, upscale: int) -> torch.Tensor:
    """Float N x C x H x W -> N x C x (H*upscale) x (W*upscale), bilinear."""
    if upscale == 1:
        return images
    h, w = images.shape[-2:]
    return F.interpolate(images, size=(h * upscale, w * upscale), mode="bilinear", align_corners=False)


def resized(images_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N x C x H x W -> uint8 N x C x size x size, bilinear with half-pixel centres (as `upscaled`),
    rounded to the nearest level. On a CPU by the uint8 kernel on channels_last images (vectorised, about 5x
    faster than resizing in float: docs/speed.md); elsewhere in float and rounded back (the two agree to
    within one level)."""
    if images_uint8.shape[-2:] == (size, size):
        return images_uint8
    if images_uint8.device.type == "cpu":
        return F.interpolate(images_uint8.contiguous(memory_format=torch.channels_last), size=(size, size),
                             mode="bilinear", align_corners=False)
    x = F.interpolate(images_uint8.float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W -> N x 1 x H x W luma (ITU-R 601 weights)."""
    return (images * on_device(LUMA, images.device)).sum(1, keepdim=True)
