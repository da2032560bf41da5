"""Pretext `jigsaw`: which permutation shuffled the 9 tiles of a 3x3 grid? (Noroozi & Favaro, 2016.)

The grid is cut exactly as for `context` (same geometry params, gap, jitter, gray, per-tile
standardisation and random rescaling, for the same shortcut reasons); the tiles are then put in the order
of one permutation from a fixed set of `pretext.jigsaw.permutations`, chosen greedily so that every
permutation is as far as possible (Hamming distance) from all the others, as in the paper. The set depends
only on its size, never on the seed. Each tile goes through the shared extractor; an MLP on the 9
concatenated feature vectors names the permutation. Chance 1 / permutations.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations as all_orders
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.augment import crop
from stages.common import param
from stages.engine import Batch
from stages.pretexts.base import ClassifierHead, PretextTask
from stages.pretexts.context import Geometry, finish_patches, gray_upscaled

TILES = 9


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


def make_puzzles(images_uint8: torch.Tensor, geo: Geometry, perms: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x 3 x H x W -> shuffled tiles N x 9 x 3 x P x P and the permutation index of each (N).
    Tile slot j holds grid cell perms[label][j] (cells in row-major order)."""
    n = images_uint8.shape[0]
    dev = images_uint8.device
    big = gray_upscaled(images_uint8, geo.upscale)
    slack = big.shape[-1] - geo.extent
    origin = torch.randint(0, slack + 1, (n, 1, 2), generator=generator, device=dev) + geo.jitter
    cells = torch.tensor([(r, c) for r in range(3) for c in range(3)], device=dev)        # 9 x 2
    labels = torch.randint(0, len(perms), (n,), generator=generator, device=dev)
    order = perms.to(dev)[labels]                                                          # N x 9
    corners = origin + cells[order] * geo.stride                                           # N x 9 x 2
    corners = corners + torch.randint(-geo.jitter, geo.jitter + 1, (n, TILES, 2), generator=generator, device=dev)
    p = geo.patch_size
    source = torch.arange(n, device=dev).repeat_interleave(TILES)
    tiles = crop(big, corners[..., 0].reshape(-1), corners[..., 1].reshape(-1), p, p, source=source)
    tiles = finish_patches(tiles, geo, generator)
    return tiles.view(n, TILES, 3, p, p), labels


class Jigsaw(PretextTask):
    name = "jigsaw"

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        self.geo = Geometry.from_params(params)
        self.geo.check(image_size)
        count = param(params, "pretext.jigsaw.permutations")
        self.perms = torch.from_numpy(permutation_set(count))
        self.chance = 1 / count

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        return ClassifierHead(extractor, feat_dim, views=TILES, classes=len(self.perms))

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        return make_puzzles(images, self.geo, self.perms, generator)
