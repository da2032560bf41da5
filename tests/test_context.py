import pytest
import torch

from stages.common import UserError
from stages.pretexts.base import ClassifierHead
from stages.pretexts.context import OFFSETS, Geometry, make_pairs, sample_positions
from stages.models import build_extractor

GEO = Geometry(upscale=4, patch_size=24, gap=8, jitter=3, rescale_prob=0.0, rescale_min=1.0)


def test_neighbour_offset_matches_label_within_jitter():
    g = torch.Generator().manual_seed(0)
    centre, neighbour, labels = sample_positions(5000, 128, GEO, g)
    expected = OFFSETS[labels] * GEO.stride
    assert ((neighbour - centre) - expected).abs().max() <= 2 * GEO.jitter
    assert set(labels.tolist()) == set(range(8))
    # jitter is really used: offsets vary
    assert ((neighbour - centre) - expected).abs().max() == 2 * GEO.jitter


def test_patches_inside_image_and_never_touch():
    g = torch.Generator().manual_seed(1)
    side = 128
    centre, neighbour, labels = sample_positions(5000, side, GEO, g)
    for corner in (centre, neighbour):
        assert corner.min() >= 0 and (corner + GEO.patch_size).max() <= side
    # along every axis in which the neighbour moves, the gap left is at least gap - 2 * jitter
    moved = OFFSETS[labels] != 0
    distance = (neighbour - centre).abs()
    assert (distance[moved] - GEO.patch_size).min() >= GEO.gap - 2 * GEO.jitter >= 2


def test_patch_content_comes_from_the_sampled_position():
    # an image whose pixel value encodes its row: the patch's top row says where it was cut
    geo = Geometry(upscale=1, patch_size=8, gap=4, jitter=1, rescale_prob=0.0, rescale_min=1.0)
    rows = torch.arange(40).view(1, 1, 40, 1).expand(1, 3, 40, 40)
    images = (rows * 6).to(torch.uint8).repeat(64, 1, 1, 1)
    g = torch.Generator().manual_seed(2)
    pairs, labels = make_pairs(images, geo, g)
    assert pairs.shape == (64, 2, 3, 8, 8)
    # each patch is a vertical ramp, standardised per patch: same for both patches, whatever the position
    assert torch.allclose(pairs[:, 0], pairs[:, 1], atol=1e-4)
    assert torch.allclose(pairs.mean(dim=(2, 3, 4)), torch.zeros(64, 2), atol=1e-4)


def test_labels_are_recoverable_from_positions():
    # with the position sampler seeded identically, make_pairs draws the same labels
    images = torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8)
    _, labels = make_pairs(images, GEO, torch.Generator().manual_seed(3))
    _, _, expected = sample_positions(32, 128, GEO, torch.Generator().manual_seed(3))
    assert torch.equal(labels, expected)


def test_geometry_that_does_not_fit_is_a_user_error():
    with pytest.raises(UserError, match="pretext.patch_size"):
        Geometry(upscale=1, patch_size=24, gap=8, jitter=3, rescale_prob=0, rescale_min=1).check(32)
    with pytest.raises(UserError, match="jitter"):
        Geometry(upscale=4, patch_size=24, gap=2, jitter=3, rescale_prob=0, rescale_min=1).check(32)


def test_context_net_predicts_eight_positions():
    extractor, dim = build_extractor("resnet18", "imagenet")
    net = ClassifierHead(extractor, dim, views=2, classes=8)
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    geo = Geometry(upscale=4, patch_size=24, gap=8, jitter=3, rescale_prob=1.0, rescale_min=0.5)
    pairs, _ = make_pairs(images, geo, torch.Generator().manual_seed(0))
    assert net(pairs).shape == (4, 8)
