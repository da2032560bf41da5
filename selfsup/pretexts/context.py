"""Pretext `context`: context prediction (Doersch, Gupta & Efros, 2015) on small images.

A centre patch and one of its 8 neighbours in a 3x3 grid are cut from an image; the network sees both and
predicts which of the 8 the neighbour is. On 32x32 images a whole 3x3 grid of informative patches does not
fit, so only the two patches a pair needs are cut: the centre is placed anywhere the pair fits for the
drawn label. That gives every label its own range of centre positions, a position prior a single patch
could exploit; the controls measure how much of the accuracy such single-patch cues explain:
`other_centre` and `other_neighbour` take the centre or the neighbour from another image at the same place
(so both places still follow the label: an upper bound on what position gives), `other_pair_centre` takes
another pair's centre, cut at the place drawn for that pair (so only the neighbour and its place follow the
label; a place-blind network would keep what the neighbour alone tells, a network that reads both places is
misled: a lower bound).

The shortcuts the paper found, and the ones 32x32 JPEG-re-encoded data adds, are closed as follows (params
under `pretext.context`, geometry in selfsup/pretexts/grid.py):

- a `gap` between the patches and a per-patch `jitter`, so edges and lines cannot simply be continued;
- the stride `patch_size + gap` a multiple of 4 source pixels (default 10 + 2 at `upscale` 2): JPEG's 8x8
  block edges then sit at the same phase in both patches (a multiple of 8) or half a block apart whichever way
  the neighbour lies (12, the default), and say nothing about direction; with `shift` the phase of the block
  grid in the frame is random per image, so it says nothing about place either;
- a random share `gray_prob` of the pairs is dropped to gray (chromatic aberration, JPEG's chroma blocks);
- each patch gets its own brightness and contrast jitter after dataset normalisation, so neither can be
  matched across patches (a floor-free alternative to per-patch standardisation, which turns the many
  near-flat patches of 32 px images into amplified noise);
- images are flipped horizontally at random before cutting (the labels follow the flipped positions);
- a random square crop of at least `crop_min` of the side, resized back to the full image, is what the pair
  is cut from: where a patch sits in the crop then says less about where it sits in the (object-centred)
  image, which weakens the single-patch position prior;
- `shift`: each image moved by a random offset of up to that share of its side, the border it uncovers
  filled by reflection (continuous at the mirror line, so no edge marks it): where the object sits in the
  frame the pair is cut from then varies by more than a patch stride, so what a patch shows says little about
  where it sits (zero padding instead would mark the border patches).
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from selfsup.training.augment import crop, gather_pixels, normalize, on_device, reflect
from selfsup.training.engine import Batch
from selfsup.core.params import param
from selfsup.pretexts.base import ClassifierHead, PretextTask, SpatialPairHead
from selfsup.pretexts.grid import OFFSETS, Geometry, resized, to_gray


def sample_pair_positions(n: int, side: int, geo: Geometry, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu", placement: str = "pair"
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-left corners (n x 2, row/col) of the centre and the neighbour patch, and the labels (0..7).

    The centre is drawn uniformly among the places where both jittered patches fit in a `side` x `side`
    image: for the drawn label (`placement="pair"`: each label has its own range, a prior on where a patch
    sits) or for every label at once (`"grid"`: where the whole jittered 3x3 grid fits, one range for all)."""
    def randint(low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=generator, device=device)

    labels = randint(0, 8, (n,))
    step = on_device(OFFSETS, device)[labels] * geo.stride               # n x 2
    j, p = geo.jitter, geo.patch_size
    if placement == "grid":  # one range for every label: where all 8 neighbours fit around the centre
        low = torch.full_like(step, j + geo.stride)
        high = torch.full_like(step, side - p - j - geo.stride)
    else:
        low = j - step.clamp(max=0)                                      # first valid centre corner
        high = side - p - j - step.clamp(min=0)                          # last valid centre corner
    u = torch.rand((n, 2), generator=generator, device=device)
    centre = low + (u * (high - low + 1)).long().clamp(max=high - low)
    neighbour = centre + step
    centre = centre + randint(-j, j + 1, (n, 2))
    neighbour = neighbour + randint(-j, j + 1, (n, 2))
    return centre, neighbour, labels


def jitter_colour(patches: torch.Tensor, gray_prob: float, brightness: float, contrast: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Normalised patches (2*pairs x 3 x P x P, the two patches of a pair next to each other) -> both
    patches of a random share `gray_prob` of the pairs in gray (as 3 channels), then each patch's contrast
    scaled by a factor in 1 +- `contrast` around its mean and its brightness shifted by up to +-`brightness`
    (in [0, 1] pixel units)."""
    m, dev = patches.shape[0], patches.device
    if gray_prob > 0:
        gray = (torch.rand(m // 2, generator=generator, device=dev) < gray_prob).repeat_interleave(2)
        patches = torch.lerp(patches, to_gray(patches).expand(-1, 3, -1, -1), gray.view(m, 1, 1, 1).float())
    mean = patches.mean(dim=(1, 2, 3), keepdim=True)
    scale = 1 + (torch.rand((m, 1, 1, 1), generator=generator, device=dev) * 2 - 1) * contrast
    # brightness in [0, 1] units; divided by a typical channel std (0.25) for normalised pixels
    shift = (torch.rand((m, 1, 1, 1), generator=generator, device=dev) * 2 - 1) * (brightness / 0.25)
    return torch.addcmul(mean * (1 - scale) + shift, patches, scale)  # (patches - mean) * scale + mean + shift


class Context(PretextTask):
    """Which of the 8 neighbours of the centre patch is the second patch? Chance 1/8."""

    chance = 1 / 8
    controls = ("other_centre", "other_neighbour", "other_pair_centre")

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(params, image_size, mean, std)
        s = "pretext.context"
        self.geo = Geometry.from_params(params, s)
        self.placement = param(params, f"{s}.placement")
        if self.placement == "grid":
            self.geo.check(image_size, self.geo.grid_extent, "a 3x3 grid (3*patch_size + 2*gap + 2*jitter)")
        else:
            self.geo.check(image_size, self.geo.pair_extent, "a diagonal pair (2*patch_size + gap + 2*jitter)")
        self.gray_prob = param(params, f"{s}.gray_prob")
        self.brightness = param(params, f"{s}.brightness")
        self.contrast = param(params, f"{s}.contrast")
        self.flip = param(params, f"{s}.flip")
        self.crop_min = param(params, f"{s}.crop_min")
        self.shift = param(params, f"{s}.shift")
        self.fusion = param(params, f"{s}.fusion")

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        if self.fusion == "spatial":
            return SpatialPairHead(extractor, self.geo.patch_size, classes=8)
        return ClassifierHead(extractor, feat_dim, views=2, classes=8)

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        return self.pairs(images, generator)

    def control_batch(self, images: torch.Tensor, generator: torch.Generator | None, control: str) -> Batch:
        return self.pairs(images, generator, control)

    def zoom(self, images_uint8: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A random square crop of each image, its side drawn once per batch between `crop_min` of the image
        side and all of it (from the host RNG: no device sync), resized to the image size times `upscale`;
        uint8 in, uint8 out."""
        x, n, full = images_uint8, images_uint8.shape[0], images_uint8.shape[-1]  # square images
        side = random.randint(max(1, round(self.crop_min * full)), full)
        if side < full:
            top = torch.randint(0, full - side + 1, (n,), generator=generator, device=x.device)
            left = torch.randint(0, full - side + 1, (n,), generator=generator, device=x.device)
            x = crop(x, top, left, side, side)
        return resized(x, full * self.geo.upscale)

    def pairs(self, images_uint8: torch.Tensor, generator: torch.Generator | None, control: str | None = None
              ) -> Batch:
        """uint8 N x 3 x H x W -> pretext inputs N x 2 x 3 x P x P (centre, neighbour) and labels N. With a
        control, the centre (`other_centre`) or the neighbour (`other_neighbour`) of pair i is cut from image
        i - 1 instead (at the same place), so only the other patch relates to the label; with
        `other_pair_centre` pair i gets pair i - 1's centre as that pair cut it (another image, at the place
        drawn for another label), so only the neighbour, its content and its place, relates to the label.

        Zoom and upscaling work on the uint8 images; the flip is folded into the columns the patches are
        cut from, all 2N patches in one gather; only the patches are made float."""
        n, dev = images_uint8.shape[0], images_uint8.device
        flip = torch.rand(n, generator=generator, device=dev) < 0.5 if self.flip else None
        big = self.zoom(images_uint8, generator)
        side, p = big.shape[-1], self.geo.patch_size
        centre, neighbour, labels = sample_pair_positions(n, side, self.geo, generator, dev, self.placement)
        own, other = torch.arange(n, device=dev), torch.arange(n, device=dev).roll(1)
        if control == "other_pair_centre":
            centre = centre.roll(1, 0)
        centre_from = other if control in ("other_centre", "other_pair_centre") else own
        neighbour_from = other if control == "other_neighbour" else own
        corners = torch.stack([centre, neighbour], dim=1).view(2 * n, 2)     # pair by pair: c0, n0, c1, n1...
        source = torch.stack([centre_from, neighbour_from], dim=1).view(2 * n)
        rows = corners[:, :1] + torch.arange(p, device=dev)
        cols = corners[:, 1:] + torch.arange(p, device=dev)
        if self.shift > 0:  # each image moved by its own offset, the border it uncovers filled by reflection
            most = round(self.shift * side)
            move = torch.randint(-most, most + 1, (n, 2), generator=generator, device=dev)[source]
            rows, cols = reflect(rows + move[:, :1], side), reflect(cols + move[:, 1:], side)
        if flip is not None:  # a patch of the flipped image: the mirrored columns, right to left
            cols = torch.where(flip[source].view(-1, 1), side - 1 - cols, cols)
        cut = gather_pixels(big, source, rows.view(2 * n, p, 1), cols.view(2 * n, 1, p))  # uint8, channels_last
        # the colour work per channel and per patch runs on whole planes (channels_last would put each
        # per-channel op's broadcast in the innermost dimension, 3 wide, several times slower); the patches
        # go to the network channels_last, the layout the cut images and fine-tuning batches have
        patches = normalize(cut, self.mean, self.std, memory_format=torch.contiguous_format)
        patches = jitter_colour(patches, self.gray_prob, self.brightness, self.contrast, generator)
        return patches.contiguous(memory_format=torch.channels_last).unflatten(0, (n, 2)), labels
