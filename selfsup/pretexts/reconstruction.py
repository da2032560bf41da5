"""Pretext `reconstruction`: an encoder-decoder restores images from a corrupted copy (a denoising, inpainting
autoencoder in the spirit of Vincent et al. 2008 and Pathak et al.'s context encoders, 2016).

The input is the image with a random share (`pretext.reconstruction.mask_ratio`) of its `block` x `block`
squares blanked out and Gaussian noise (`noise_std`, in [0, 1] pixel units) added everywhere, so the
identity never solves it. The encoder is the feature extractor; its pooled feature vector is the
bottleneck, and a small transposed-convolution decoder, discarded after pretraining, draws the image back.
The loss is the mean squared error on the blanked pixels plus `visible_weight` times that on the others.
The pretext metric is the PSNR (dB) of the blanked pixels, in [0, 1] pixel units; higher is better, and
predicting every blanked pixel as the dataset mean gives about 10-13 dB on natural images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.training.augment import normalize, random_crop_flip
from selfsup.training.engine import Batch
from selfsup.core.params import UserError, param
from selfsup.pretexts.base import PretextTask


class Reconstruction(PretextTask):
    metric = "psnr"

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        key = "pretext.reconstruction"
        self.mask_ratio = param(params, f"{key}.mask_ratio")
        self.block = param(params, f"{key}.block")
        self.noise_std = param(params, f"{key}.noise_std")
        self.visible_weight = param(params, f"{key}.visible_weight")
        if image_size % self.block:
            raise UserError(f"param '{key}.block' is {self.block}: it must divide the image size "
                            f"{image_size} (data.image_size)")

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        return AutoEncoder(extractor, feat_dim, self.image_size)

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        """inputs: corrupted, normalised images; targets: the clean image in [0, 1] and the mask, stacked
        as 4 channels (N x 4 x H x W)."""
        clean = random_crop_flip(images, 0, generator).float() / 255.0
        n, _, h, w = clean.shape
        cells = torch.rand(n, 1, h // self.block, w // self.block, generator=generator, device=clean.device)
        mask = F.interpolate((cells < self.mask_ratio).float(), scale_factor=self.block, mode="nearest")
        noise = torch.randn(clean.shape, generator=generator, device=clean.device) * self.noise_std
        corrupted = (clean + noise).clamp(0, 1)
        inputs = normalize(corrupted * 255.0, self.mean, self.std) * (1 - mask)  # blanked = the mean
        return inputs, torch.cat([clean, mask], dim=1)

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        clean, mask = targets[:, :3], targets[:, 3:]
        error = (outputs.float() - clean).pow(2).mean(1, keepdim=True)  # per pixel
        masked = (error * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)
        visible = (error * (1 - mask)).flatten(1).sum(1) / (1 - mask).flatten(1).sum(1).clamp(min=1)
        loss = (masked + self.visible_weight * visible).mean()
        psnr = -10 * torch.log10(masked.detach().clamp(min=1e-10))
        return loss, psnr.sum()


class AutoEncoder(nn.Module):
    """The extractor as encoder; a decoder from its feature vector: a linear map to 4 x 4 x 256, then
    stride-2 transposed convolutions up to the image size (resized at the end when it is not 4 * 2^k)."""

    def __init__(self, extractor: nn.Module, feat_dim: int, image_size: int, width: int = 256):
        super().__init__()
        self.extractor = extractor
        self.image_size = image_size
        self.width = width
        self.project = nn.Linear(feat_dim, width * 16)
        layers: list[nn.Module] = []
        channels = width
        for _ in range(max(0, math.ceil(math.log2(image_size / 4)))):
            out = max(32, channels // 2)
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.project(self.extractor(x)).view(-1, self.width, 4, 4)
        out = self.decoder(z)
        if out.shape[-1] != self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return out
