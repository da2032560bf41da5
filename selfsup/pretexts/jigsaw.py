"""Pretext `jigsaw`: which permutation shuffled the 9 tiles of a 3x3 grid? (Noroozi & Favaro, 2016.)

The grid (`pretext.jigsaw.upscale`, `patch_size`, `gap`, `jitter`; selfsup/pretexts/grid.py) is laid at a random
place; tiles are dropped to gray (chromatic aberration and JPEG's 16x16 chroma blocks would leak position),
a random share (`rescale_prob`) is scaled down and up again (so sharpness and block edges mean nothing),
and each is standardised on its own (no brightness or contrast cue across tiles). The tiles are then put in
the order of one permutation from a fixed set of `pretext.jigsaw.permutations`, chosen greedily so that every
permutation is as far as possible (Hamming distance) from all the others, as in the paper. The set depends
only on its size, never on the seed. Each tile goes through the shared extractor; an MLP on the 9
concatenated feature vectors names the permutation. Chance 1 / permutations.
"""

from __future__ import annotations

import random
from functools import lru_cache
from itertools import permutations as all_orders
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.training.augment import crop, on_device
from selfsup.training.engine import Batch
from selfsup.core.params import param
from selfsup.pretexts.base import ClassifierHead, PretextTask
from selfsup.pretexts.grid import Geometry, to_gray, upscaled

TILES = 9
CELLS = torch.tensor([(r, c) for r in range(3) for c in range(3)])  # (row, column) of each cell, row-major


@lru_cache(maxsize=8)
def permutation_set(count: int) -> np.ndarray:
    """`count` permutations of range(9) (count x 9), greedily maximising the minimum Hamming distance
    between any two; deterministic."""
    orders = np.array(list(all_orders(range(TILES))), dtype=np.int8)  # 362,880 x 9
    chosen = [len(orders) // 2]
    nearest = (orders != orders[chosen[0]]).sum(1)  # each order's distance to the nearest chosen one
    for _ in range(count - 1):
        best = int(np.argmax(nearest))
        chosen.append(best)
        nearest = np.minimum(nearest, (orders != orders[best]).sum(1))
    return orders[chosen].astype(np.int64)


def rescale(patches: torch.Tensor, prob: float, smallest: float, generator: torch.Generator | None) -> torch.Tensor:
    """Scale a random share `prob` of the patches down (to between `smallest` and 1 of their size) and up."""
    if prob <= 0 or smallest >= 1:
        return patches
    n, _, p, _ = patches.shape
    scale = random.uniform(smallest, 1.0)  # one size per batch, from the host RNG: no device sync
    small = max(2, int(round(p * scale)))
    blurred = F.interpolate(F.interpolate(patches, size=small, mode="bilinear", antialias=True,
                                          align_corners=False),
                            size=p, mode="bilinear", align_corners=False)
    chosen = torch.rand(n, generator=generator, device=patches.device) < prob
    return torch.where(chosen.view(n, 1, 1, 1), blurred, patches)


def standardise(patches: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    mean = patches.mean(dim=(1, 2, 3), keepdim=True)
    std = patches.std(dim=(1, 2, 3), keepdim=True)
    return (patches - mean) / (std + eps)


def make_puzzles(images_uint8: torch.Tensor, geo: Geometry, perms: torch.Tensor,
                 generator: torch.Generator | None = None, rescale_prob: float = 0.0, rescale_min: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x 3 x H x W -> shuffled tiles N x 9 x 3 x P x P and the permutation index of each (N).
    Tile slot j holds grid cell perms[label][j] (cells in row-major order)."""
    n = images_uint8.shape[0]
    dev = images_uint8.device
    big = upscaled(to_gray(images_uint8.float() / 255.0), geo.upscale)
    slack = big.shape[-1] - geo.grid_extent
    origin = torch.randint(0, slack + 1, (n, 1, 2), generator=generator, device=dev) + geo.jitter
    cells = on_device(CELLS, dev)                                                          # 9 x 2
    labels = torch.randint(0, len(perms), (n,), generator=generator, device=dev)
    order = perms[labels]  # N x 9; `perms` lives on the images' device (the task moves them there once)
    corners = origin + cells[order] * geo.stride                                           # N x 9 x 2
    corners = corners + torch.randint(-geo.jitter, geo.jitter + 1, (n, TILES, 2), generator=generator, device=dev)
    p = geo.patch_size
    source = torch.arange(n, device=dev).repeat_interleave(TILES)
    tiles = crop(big, corners[..., 0].reshape(-1), corners[..., 1].reshape(-1), p, p, source=source)
    tiles = standardise(rescale(tiles, rescale_prob, rescale_min, generator)).expand(-1, 3, -1, -1)
    return tiles.view(n, TILES, 3, p, p), labels


class Jigsaw(PretextTask):

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        self.geo = Geometry.from_params(params, "pretext.jigsaw")
        self.geo.check(image_size, self.geo.grid_extent, "the jigsaw grid (3*patch_size + 2*gap + 2*jitter)")
        self.rescale_prob = param(params, "pretext.jigsaw.rescale_prob")
        self.rescale_min = param(params, "pretext.jigsaw.rescale_min")
        count = param(params, "pretext.jigsaw.permutations")
        self.perms = torch.from_numpy(permutation_set(count))
        self.chance = 1 / count

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        return ClassifierHead(extractor, feat_dim, views=TILES, classes=len(self.perms))

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        if self.perms.device != images.device:  # once, not per step
            self.perms = self.perms.to(images.device)
        return make_puzzles(images, self.geo, self.perms, generator, self.rescale_prob, self.rescale_min)
