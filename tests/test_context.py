"""Context prediction: the pair geometry (patches inside the image, labels match positions, gap and jitter
respected), the colour treatment, and the shortcut controls."""

import pytest
import torch

from selfsup.training.models import build_extractor
from selfsup.core.params import UserError
from selfsup.pretexts.context import Context, sample_pair_positions
from selfsup.pretexts.grid import OFFSETS, Geometry, resized, upscaled
from selfsup.training.augment import reflect
from tests.test_pretexts import PARAMS

GEO = Geometry(upscale=1, patch_size=14, gap=2, jitter=1)
MEAN, STD = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])


def context(**changes) -> Context:
    section = {**PARAMS["pretext"]["context"], **changes}
    return Context({"pretext": {**PARAMS["pretext"], "context": section}}, 32, MEAN, STD)


def test_neighbour_offset_matches_label_within_jitter():
    centre, neighbour, labels = sample_pair_positions(20000, 32, GEO, torch.Generator().manual_seed(0))
    expected = OFFSETS[labels] * GEO.stride
    deviation = ((neighbour - centre) - expected).abs()
    assert deviation.max() == 2 * GEO.jitter  # jitter is used, and never more
    assert set(labels.tolist()) == set(range(8))
    assert abs(labels.float().mean().item() - 3.5) < 0.05  # labels uniform


@pytest.mark.parametrize("geo,side", [(GEO, 32), (Geometry(upscale=2, patch_size=24, gap=8, jitter=2), 64),
                                      (Geometry(upscale=1, patch_size=8, gap=4, jitter=2), 40)])
def test_patches_inside_image_never_touch_and_cover_every_place(geo, side):
    centre, neighbour, labels = sample_pair_positions(20000, side, geo, torch.Generator().manual_seed(1))
    for corner in (centre, neighbour):
        assert corner.min() >= 0 and (corner + geo.patch_size).max() <= side
    moved = OFFSETS[labels] != 0
    distance = (neighbour - centre).abs()
    assert (distance[moved] - geo.patch_size).min() >= geo.gap - 2 * geo.jitter
    # for each label, every centre row the pair allows is drawn (the sampler is not biased inward)
    for label in range(8):
        step = int(OFFSETS[label][0]) * geo.stride
        rows = centre[labels == label][:, 0]
        assert rows.min() == -min(0, step) and rows.max() == side - geo.patch_size - max(0, step)


def test_grid_placement_gives_every_label_the_same_centre_range():
    geo, side = Geometry(upscale=3, patch_size=24, gap=4, jitter=2), 96
    centre, neighbour, labels = sample_pair_positions(40000, side, geo, torch.Generator().manual_seed(2),
                                                      placement="grid")
    for corner in (centre, neighbour):
        assert corner.min() >= 0 and (corner + geo.patch_size).max() <= side
    assert ((neighbour - centre) - OFFSETS[labels] * geo.stride).abs().max() == 2 * geo.jitter
    first, last = geo.stride, side - geo.patch_size - geo.stride  # where all 8 neighbours fit, before jitter
    for label in range(8):  # the centre's range is the grid's, whichever neighbour was drawn
        rows, cols = centre[labels == label].T
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (first, last, first, last)


def test_grid_placement_checks_that_the_grid_fits():
    with pytest.raises(UserError, match="3x3 grid"):
        context(placement="grid", patch_size=14, gap=2, jitter=1)  # 3*14 + 2*2 + 2 = 48 > 32
    context(placement="grid", patch_size=8, gap=2, jitter=1)      # 24 + 4 + 2 = 30 fits


def coded_images(n: int) -> torch.Tensor:
    """uint8 images whose red channel encodes the row, green the column and blue the image's index."""
    rows = torch.arange(32).view(32, 1).expand(32, 32)
    cols = torch.arange(32).view(1, 32).expand(32, 32)
    return torch.stack([torch.stack([rows * 8, cols * 8, torch.full((32, 32), i)]) for i in range(n)]).to(torch.uint8)


def decode(pairs: torch.Tensor) -> torch.Tensor:
    """Top-left pixel of each patch -> (row, column, image) where it was cut: N x 2 x 3."""
    value = torch.round((pairs[:, :, :, 0, 0] * 0.25 + 0.5) * 255)
    return torch.stack([value[..., 0] / 8, value[..., 1] / 8, value[..., 2]], dim=-1).round()


def test_patch_content_comes_from_the_sampled_position():
    task = context(gray_prob=0.0, brightness=0.0, contrast=0.0, flip=False)
    pairs, labels = task.batch(coded_images(256), torch.Generator().manual_seed(2))
    assert pairs.shape == (256, 2, 3, 14, 14)
    where = decode(pairs)
    step = where[:, 1, :2] - where[:, 0, :2]
    assert (step - OFFSETS[labels].float() * GEO.stride).abs().max() <= 2 * GEO.jitter
    assert torch.equal(where[:, 0, 2], torch.arange(256).float())  # both patches from their own image
    assert torch.equal(where[:, 1, 2], torch.arange(256).float())


def test_shift_moves_both_patches_of_an_image_alike_and_reflects_at_the_border():
    task = context(gray_prob=0.0, brightness=0.0, contrast=0.0, flip=False, shift=0.25)  # up to 8 of 32 pixels
    plain = context(gray_prob=0.0, brightness=0.0, contrast=0.0, flip=False)
    moved = decode(task.batch(coded_images(256), torch.Generator().manual_seed(2))[0])
    still = decode(plain.batch(coded_images(256), torch.Generator().manual_seed(2))[0])
    # the same draws up to the shift, so `still` holds the unshifted corners; some one offset per image moved
    # both patches, a corner beyond the border reflected back
    moves = torch.cartesian_prod(torch.arange(-8, 9), torch.arange(-8, 9)).float()  # every offset up to 8
    cut = reflect(still[:, None, :, :2] + moves[None, :, None, :], 32)               # pairs x moves x 2 x 2
    assert (cut == moved[:, None, :, :2]).flatten(2).all(2).any(1).all()
    apparent = moved[:, :, :2] - still[:, :, :2]
    assert apparent.abs().max() == 8 and (apparent[:, 0] != 0).any(1).float().mean() > 0.8
    row = task.batch(coded_images(64), torch.Generator().manual_seed(5))[0][:, :, 0]  # red channel: the row code
    codes = torch.round((row * 0.25 + 0.5) * 255 / 8)
    steps = codes[..., 1:, 0] - codes[..., :-1, 0]  # down a patch's first column, one row a pixel
    assert set(steps.unique().tolist()) <= {-1.0, 0.0, 1.0}  # reflection: rows run on, turn back, never jump


def test_flip_keeps_labels_true_to_the_flipped_image():
    # in a flipped image the column code runs backwards: a right neighbour decodes as a step to the left
    task = context(gray_prob=0.0, brightness=0.0, contrast=0.0, flip=True)
    pairs, labels = task.batch(coded_images(512), torch.Generator().manual_seed(3))
    where = decode(pairs)
    step = where[:, 1, :2] - where[:, 0, :2]
    expected = OFFSETS[labels].float() * GEO.stride
    mirrored = expected * torch.tensor([1.0, -1.0])
    straight = (step - expected).abs().amax(1) <= 2 * GEO.jitter
    flipped = (step - mirrored).abs().amax(1) <= 2 * GEO.jitter
    assert (straight | flipped).all()
    horizontal = OFFSETS[labels][:, 1] != 0
    share = float((horizontal & ~straight).sum() / horizontal.sum())
    assert 0.4 < share < 0.6  # about half the images were flipped before cutting


def test_gray_is_chosen_per_pair_and_jitter_per_patch():
    task = context(gray_prob=0.5, brightness=0.2, contrast=0.2, flip=False)
    images = torch.randint(0, 255, (400, 3, 32, 32), dtype=torch.uint8)
    pairs, _ = task.batch(images, torch.Generator().manual_seed(4))
    channel_spread = (pairs - pairs.mean(dim=2, keepdim=True)).abs().amax(dim=(2, 3, 4))  # N x 2
    gray = channel_spread < 1e-5
    assert torch.equal(gray[:, 0], gray[:, 1])  # both patches of a pair, or neither
    assert 0.4 < gray[:, 0].float().mean() < 0.6
    # brightness differs between the two patches of a pair (own jitter each)
    assert (pairs[:, 0].mean(dim=(1, 2, 3)) - pairs[:, 1].mean(dim=(1, 2, 3))).abs().mean() > 0.1


def test_controls_replace_one_patch_with_another_images_at_the_same_place():
    task = context(gray_prob=0.0, brightness=0.0, contrast=0.0, flip=False)
    images = coded_images(64)
    real, labels = task.batch(images, torch.Generator().manual_seed(5))
    for control, swapped, kept in (("other_centre", 0, 1), ("other_neighbour", 1, 0)):
        pairs, same = task.control_batch(images, torch.Generator().manual_seed(5), control)
        assert torch.equal(same, labels)
        assert torch.equal(pairs[:, kept], real[:, kept])
        where, truth = decode(pairs), decode(real)
        assert torch.equal(where[:, swapped, :2], truth[:, swapped, :2])  # the same place...
        assert torch.equal(where[:, swapped, 2], torch.arange(64).roll(1).float())  # ...of the previous image
    # other_pair_centre: the previous pair's centre, as that pair cut it (its image, its place)
    pairs, same = task.control_batch(images, torch.Generator().manual_seed(5), "other_pair_centre")
    assert torch.equal(same, labels) and torch.equal(pairs[:, 1], real[:, 1])
    assert torch.equal(pairs[:, 0], real[:, 0].roll(1, 0))


def test_a_geometry_that_does_not_fit_is_a_user_error():
    with pytest.raises(UserError, match="pretext.context.patch_size"):
        context(patch_size=16)  # 2*16 + 2 + 2 > 32
    with pytest.raises(UserError, match="jitter"):
        context(gap=1)


def test_context_net_predicts_eight_positions():
    task = context()
    extractor, dim = build_extractor("resnet18", "half")
    net = task.network(extractor, dim)
    pairs, _ = task.batch(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.Generator())
    assert net(pairs).shape == (4, 8)


def test_zoomed_pairs_keep_direction_and_stay_in_their_image():
    # cut from a random crop resized to full size: steps shrink in source pixels, directions stay true
    task = context(gray_prob=0.0, brightness=0.0, contrast=0.0, flip=False, crop_min=0.5)
    for seed in range(3):
        pairs, labels = task.batch(coded_images(256), torch.Generator().manual_seed(seed))
        where = decode(pairs)
        step = where[:, 1, :2] - where[:, 0, :2]
        expected = OFFSETS[labels].float()
        assert torch.equal(torch.sign(torch.where(step.abs() <= 3, 0, step)), expected)
        assert (step.abs().max() <= GEO.stride + 2 * GEO.jitter)
        assert torch.equal(where[:, 0, 2], torch.arange(256).float())


def position_oracle(inputs):
    """A 'network' that reads the label off where the two patches were cut (the coded images say it): it
    uses position only, never whether the patches belong together."""
    out = []
    for pairs in inputs:
        where = decode(pairs)
        step = torch.sign(torch.where((where[:, 1, :2] - where[:, 0, :2]).abs() <= 3, 0,
                                      where[:, 1, :2] - where[:, 0, :2]))
        out.append((step.unsqueeze(1) == OFFSETS.float().unsqueeze(0)).all(-1).float())  # N x 8 one-hot
    return torch.cat(out)


def relation_oracle(inputs):
    """Right only when both patches come from one image; otherwise it guesses class 0."""
    out = []
    for pairs in inputs:
        where = decode(pairs)
        same = (where[:, 0, 2] == where[:, 1, 2]).float().unsqueeze(1)
        out.append(position_oracle([pairs]) * same + torch.nn.functional.one_hot(
            torch.zeros(len(pairs), dtype=torch.long), 8).float() * (1 - same))
    return torch.cat(out)


def test_controls_expose_a_position_shortcut_and_credit_a_relation():
    from selfsup.pretexts.base import heldout_scores
    task = context(gray_prob=0.0, brightness=0.0, contrast=0.0, flip=False)
    images = coded_images(250).repeat(8, 1, 1, 1)
    shortcut = heldout_scores(task, position_oracle, images, 500, seed=0)
    relation = heldout_scores(task, relation_oracle, images, 500, seed=0)
    assert shortcut["accuracy"] == relation["accuracy"] == 1.0
    # a position-only solution keeps its accuracy when one patch comes from another image...
    assert shortcut["control_other_centre"] == shortcut["control_other_neighbour"] == 1.0
    # ...a solution that needs both patches of one image falls to about chance (class 0 of 8)
    assert relation["control_other_centre"] < 0.2 and relation["control_other_neighbour"] < 0.2
    # another pair's centre sits where another label put it: both solutions lose the relation between places
    assert shortcut["control_other_pair_centre"] < 0.5 and relation["control_other_pair_centre"] < 0.2
    # and scoring against shuffled labels sits at chance for both
    for scores in (shortcut, relation):
        assert abs(scores["control_shuffled"] - 1 / 8) < 0.03


def test_spatial_fusion_sees_where_a_feature_sits_in_each_patch():
    """fusion=spatial fuses the two feature maps before the global pool (the head's input keeps all 3 x 3
    positions of each), the hook keeps nothing when the extractor runs alone (the per-epoch probe), and
    the extractor's weights are those of a plain extractor (what pretraining saves)."""
    extractor, dim = build_extractor("nets.fast_cnn:build", "cifar")
    net = context(upscale=2, patch_size=28, gap=4, jitter=2, fusion="spatial").network(extractor, dim)
    assert net.head[1].in_features == 128 * 3 * 3  # fast_cnn maps a 28 px patch to 128 x 3 x 3
    pairs = torch.randn(4, 2, 3, 28, 28)
    assert net(pairs).shape == (4, 8)
    net.extractor(torch.randn(3, 3, 28, 28))
    assert net._pool_input._map is None
    maps = net._feature_maps(pairs.flatten(0, 1))
    assert maps.shape == (8, 128, 3, 3) and net._pool_input._map is None  # the map the global pool would have reduced
    assert set(net.extractor.state_dict()) == set(build_extractor("nets.fast_cnn:build", "cifar")[0].state_dict())


def test_spatial_fusion_needs_a_global_pool():
    flat = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    with pytest.raises(UserError, match="pretext.context.fusion"):
        context(fusion="spatial").network(flat, 4)


def test_upscaling_in_uint8_is_the_float_upscale_rounded_and_patches_leave_channels_last():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    small = resized(images, 64)
    assert small.dtype == torch.uint8 and small.shape == (16, 3, 64, 64)
    assert (small.float() - upscaled(images.float(), 2)).abs().max() <= 1.0  # within one level
    task = context(upscale=2, patch_size=28, gap=4, jitter=2)
    pairs, _ = task.batch(images, torch.Generator().manual_seed(0))
    assert pairs.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)  # the layout the network runs in
