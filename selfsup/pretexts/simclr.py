"""Pretext `simclr`: contrastive learning of two augmented views (Chen, Kornblith, Norouzi & Hinton, 2020),
the modern reference beside the older pretext tasks.

Each image gets two views, augmented on the device in batches: a random resized crop (area share in
[`pretext.simclr.crop_min`, 1], aspect ratio in [3/4, 4/3], by one affine `grid_sample`), a horizontal flip,
colour jitter with probability 0.8 (brightness, contrast, saturation at 0.8 x `color_strength`, hue
rotation at 0.2 x it, in random order per batch) and grayscale with probability 0.2. The extractor and a
projection MLP map each view to a `projection_dim` vector; the NT-Xent loss at `temperature` asks each view
to pick its partner among the 2N - 1 other views of the batch. Under torchrun the negatives are the views on
the same rank. The pretext metric is that pick's top-1 accuracy (chance 1 / (2N - 1)).
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.training.augment import on_device
from selfsup.training.engine import Batch
from selfsup.core.params import param
from selfsup.pretexts.base import PretextTask

GRAY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
FROM_YIQ = torch.linalg.inv(TO_YIQ)  # once, on the CPU: no device sync per batch


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def resized_crop_flip(images: torch.Tensor, crop_min: float, generator) -> torch.Tensor:
    """Per-example random resized crop and horizontal flip of float images, output at the input size."""
    n, dev = images.shape[0], images.device
    area = _uniform(n, crop_min, 1.0, generator, dev)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), generator, dev))
    width = torch.sqrt(area * ratio).clamp(max=1.0)    # as shares of the image side
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = _uniform(n, -1.0, 1.0, generator, dev) * (1 - width)   # centre, in [-1, 1] grid units
    cy = _uniform(n, -1.0, 1.0, generator, dev) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * on_device(GRAY, x.device)).sum(1, keepdim=True)


def _hue(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `turn` (share of a full turn) in YIQ space: a linear map per image."""
    angle = turn * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(x), 3, 3, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = on_device(FROM_YIQ, x.device) @ rot @ on_device(TO_YIQ, x.device)        # N x 3 x 3
    return torch.einsum("nij,njhw->nihw", m, x)


def color_distort(x: torch.Tensor, strength: float, generator) -> torch.Tensor:
    """SimCLR's colour distortion on float images in [0, 1], per example."""
    n, dev = x.shape[0], x.device
    s = 0.8 * strength

    def blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        return (factor.view(n, 1, 1, 1) * a + (1 - factor.view(n, 1, 1, 1)) * b).clamp(0, 1)

    ops = [
        lambda y: (y * _uniform(n, 1 - s, 1 + s, generator, dev).view(n, 1, 1, 1)).clamp(0, 1),
        lambda y: blend(y, _gray(y).mean((2, 3), keepdim=True), _uniform(n, 1 - s, 1 + s, generator, dev)),
        lambda y: blend(y, _gray(y), _uniform(n, 1 - s, 1 + s, generator, dev)),
        lambda y: _hue(y, _uniform(n, -0.2 * strength, 0.2 * strength, generator, dev)).clamp(0, 1),
    ]
    jittered = x
    for i in random.sample(range(4), 4):  # a random order per batch (host RNG: no device sync)
        jittered = ops[i](jittered)
    apply = torch.rand(n, 1, 1, 1, generator=generator, device=dev) < 0.8
    x = torch.where(apply, jittered, x)
    gray = torch.rand(n, 1, 1, 1, generator=generator, device=dev) < 0.2
    return torch.where(gray, _gray(x).expand(-1, 3, -1, -1), x)


def nt_xent(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """z: N x 2 x D projections. Mean NT-Xent loss over the 2N views, and the number of views whose most
    similar other view is their partner."""
    n = z.shape[0]
    flat = F.normalize(z.float().reshape(2 * n, -1), dim=1)
    sim = flat @ flat.T / temperature
    sim.fill_diagonal_(float("-inf"))
    partner = torch.arange(2 * n, device=z.device) ^ 1    # rows are (view 0, view 1) of each example
    loss = F.cross_entropy(sim, partner)
    hits = (sim.detach().argmax(1) == partner).sum()
    return loss, hits


class SimCLR(PretextTask):

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        key = "pretext.simclr"
        self.temperature = param(params, f"{key}.temperature")
        self.crop_min = param(params, f"{key}.crop_min")
        self.strength = param(params, f"{key}.color_strength")
        self.projection_dim = param(params, f"{key}.projection_dim")

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        return ProjectionNet(extractor, feat_dim, self.projection_dim)

    def view(self, images: torch.Tensor, generator) -> torch.Tensor:
        x = resized_crop_flip(images.float() / 255.0, self.crop_min, generator)
        x = color_distort(x, self.strength, generator)
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        """inputs: N x 2 x 3 x H x W (two views of each image); targets: the example index (only its length
        is used: the partner of each view is fixed by position)."""
        views = torch.stack([self.view(images, generator), self.view(images, generator)], dim=1)
        return views, torch.arange(len(images), device=images.device)

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, hits = nt_xent(outputs, self.temperature)
        return loss, hits.float() / 2  # per example: the mean over its two views


class ProjectionNet(nn.Module):
    """Extractor on both views, then the projection MLP; outputs N x 2 x projection_dim."""

    def __init__(self, extractor: nn.Module, feat_dim: int, projection_dim: int, hidden: int = 512):
        super().__init__()
        self.extractor = extractor
        self.projection = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, projection_dim))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        n = views.shape[0]
        return self.projection(self.extractor(views.flatten(0, 1))).view(n, 2, -1)
