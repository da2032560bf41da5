"""The pretext registry: every task trains a few steps with a small and a CIFAR-stem backbone through the one
engine, and its extractor loads into the classifier; and each task's inputs and targets mean what they say."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from selfsup.training.augment import normalize, random_crop_flip

from selfsup.training.engine import Trainer, sgd
from selfsup.training.models import Classifier, build_extractor, load_extractor, save_extractor
from selfsup.core.params import UserError
from selfsup.pretexts import TASKS, build_task
from selfsup.pretexts.base import heldout_scores, pretext_batches
from selfsup.pretexts.grid import Geometry
from selfsup.pretexts.jigsaw import make_puzzles, permutation_set
from selfsup.pretexts.rotation import rotate
from selfsup.pretexts.simclr import _hue, color_distort, nt_xent, resized_crop_flip
from tests.synthetic import images

PARAMS = {"pretext": {"task": "context",
                      "context": {"upscale": 1, "patch_size": 14, "gap": 2, "jitter": 1, "gray_prob": 0.5,
                                  "brightness": 0.2, "contrast": 0.2, "flip": True, "crop_min": 1.0,
                                  "fusion": "pooled", "placement": "pair", "shift": 0.0},
                      "jigsaw": {"permutations": 10, "upscale": 4, "patch_size": 24, "gap": 8, "jitter": 3,
                                 "rescale_prob": 0.5, "rescale_min": 0.4},
                      "rotation": {"crop_padding": 4},
                      "reconstruction": {"mask_ratio": 0.5, "block": 8, "noise_std": 0.1, "visible_weight": 0.1},
                      "simclr": {"temperature": 0.5, "crop_min": 0.2, "color_strength": 0.5,
                                 "projection_dim": 32}}}
MEAN, STD = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])
IMAGES = torch.from_numpy(images(np.arange(16) % 10, 0))


def task_for(name: str, **changes):
    pretext = {**PARAMS["pretext"], "task": name, **changes}
    return build_task({"pretext": pretext}, 32, MEAN, STD)


def test_registry_has_the_five_tasks_and_names_the_choices():
    assert list(TASKS) == ["context", "reconstruction", "rotation", "jigsaw", "simclr"]
    with pytest.raises(UserError, match="pretext.task.*context, reconstruction, rotation, jigsaw, simclr"):
        task_for("colorization")


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("arch,stem", [("nets.small_cnn:build", "imagenet"), ("resnet18", "cifar")])
def test_task_trains_and_its_extractor_loads_into_the_classifier(tmp_path, name, arch, stem):
    torch.manual_seed(0)
    task = task_for(name)
    extractor, feat_dim = build_extractor(arch, stem, 32)
    net = task.network(extractor, feat_dim)
    trainer = Trainer(net, sgd(net, 0.01, 0.0), 3, 0, torch.device("cpu"), criterion=task.criterion)
    before = {k: v.clone() for k, v in net.extractor.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    stats = trainer.train_epoch(pretext_batches(task, IMAGES, 8, 3, gen), 3, name)
    assert np.isfinite(stats["loss"]) and stats["images_per_s"] > 0
    if task.metric == "accuracy":
        assert 0 <= stats["score"] <= 1
    changed = [k for k, v in net.extractor.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "pretraining did not touch the extractor"
    save_extractor(net.extractor, arch, stem, feat_dim, tmp_path / "e.pt", **task.describe())
    loaded, dim = load_extractor(tmp_path / "e.pt", arch, stem)
    model = Classifier(loaded, dim, 10)
    for key, value in net.extractor.state_dict().items():
        assert torch.equal(model.features.state_dict()[key], value), key
    model.eval()
    assert model(IMAGES[:2].float()).shape == (2, 10)
    assert torch.load(tmp_path / "e.pt", weights_only=True)["pretext"] == name


@pytest.mark.parametrize("name", list(TASKS))
def test_heldout_scores_are_repeatable_and_controls_present(name):
    task = task_for(name)
    extractor, feat_dim = build_extractor("nets.small_cnn:build", "imagenet")
    net = task.network(extractor, feat_dim).eval()

    def predict(inputs):
        with torch.no_grad():
            return torch.cat([net(x) for x in inputs])

    scores = [heldout_scores(task, predict, IMAGES, 8, 1) for _ in range(2)]
    assert scores[0] == scores[1]
    expected = {task.metric} | {f"control_{c}" for c in task.controls}
    expected |= {"control_shuffled"} if task.chance is not None else set()
    assert set(scores[0]) == expected


def test_rotation_rotates_each_image_by_its_label():
    x = torch.randn(8, 3, 6, 6)
    turns = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    out = rotate(x, turns)
    for i, k in enumerate(turns.tolist()):
        assert torch.equal(out[i], torch.rot90(x[i], k, dims=(1, 2)))
    task = task_for("rotation")
    inputs, labels = task.batch(IMAGES, torch.Generator().manual_seed(0))
    assert inputs.shape == (16, 3, 32, 32) and set(labels.tolist()) <= {0, 1, 2, 3} and task.chance == 0.25
    # crop, flip and turn in one gather of the uint8 pixels: the turned, normalised crop of the same draws
    g = torch.Generator().manual_seed(0)
    cropped = normalize(random_crop_flip(IMAGES, task.pad, g), task.mean, task.std)
    turns = torch.randint(0, 4, (16,), generator=g)
    assert torch.equal(labels, turns)
    for i, k in enumerate(turns.tolist()):
        assert torch.equal(inputs[i], torch.rot90(cropped[i], k, dims=(1, 2)))
    assert inputs.is_contiguous(memory_format=torch.channels_last)


def test_jigsaw_permutation_set_is_fixed_and_spread():
    perms = permutation_set(30)
    assert np.array_equal(perms, permutation_set(30))
    assert len({tuple(p) for p in perms}) == 30 and all(sorted(p) == list(range(9)) for p in perms)
    distance = (perms[:, None] != perms[None]).sum(-1) + 9 * np.eye(30, dtype=int)
    assert distance.min() >= 7  # greedy max-min Hamming: far apart (random pairs average 8)


def test_jigsaw_tiles_come_from_the_permuted_cells():
    geo = Geometry(upscale=1, patch_size=8, gap=2, jitter=0)
    perms = torch.from_numpy(permutation_set(10))
    imgs = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    tiles, labels = make_puzzles(imgs, geo, perms, torch.Generator().manual_seed(0))
    assert tiles.shape == (6, 9, 3, 8, 8)
    gray = (imgs.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1) / 255

    def standardised(t):
        return (t - t.mean()) / (t.std() + 1e-2)

    for i in range(6):
        order = perms[labels[i]]
        found = False
        for top, left in itertools.product(range(32 - geo.grid_extent + 1), repeat=2):
            cells = [(top + (c // 3) * geo.stride, left + (c % 3) * geo.stride) for c in order.tolist()]
            if all(torch.allclose(tiles[i, j, 0], standardised(gray[i, r:r + 8, c:c + 8]), atol=1e-4)
                   for j, (r, c) in enumerate(cells)):
                found = True
                break
        assert found, f"example {i}: tiles are not the cells in permutation {labels[i]}"


def test_reconstruction_masks_the_asked_share_and_scores_psnr():
    task = task_for("reconstruction")
    big = torch.from_numpy(images(np.arange(64) % 10, 0))
    inputs, targets = task.batch(big, torch.Generator().manual_seed(0))
    clean, mask = targets[:, :3], targets[:, 3:]
    assert inputs.shape == (64, 3, 32, 32) and targets.shape == (64, 4, 32, 32)
    assert mask.mean().item() == pytest.approx(0.5, abs=0.05)
    assert (inputs * mask).abs().max() == 0  # blanked squares carry nothing
    loss, psnr = task.criterion(clean, targets)  # a perfect reconstruction
    assert loss.item() == 0 and psnr.item() / 64 >= 99
    loss, psnr = task.criterion(torch.full_like(clean, 0.5), targets)
    assert loss.item() > 0 and 5 < psnr.item() / 64 < 25
    with pytest.raises(UserError, match="pretext.reconstruction.block"):
        task_for("reconstruction", reconstruction={**PARAMS["pretext"]["reconstruction"], "block": 5})


def test_simclr_views_and_loss():
    x = IMAGES.float() / 255
    g = torch.Generator().manual_seed(0)
    view = resized_crop_flip(x, 0.2, g)
    assert view.shape == x.shape and not torch.equal(view, x)
    # a horizontal ramp stays a ramp: rising, or falling where the view was flipped, and both happen
    ramp = torch.linspace(0, 1, 32).expand(64, 3, 32, 32)
    steps = resized_crop_flip(ramp, 0.2, g)[:, 0, 16].diff(dim=1)
    rising, falling = (steps >= -1e-5).all(1), (steps <= 1e-5).all(1)
    assert (rising | falling).all() and rising.any() and falling.any()
    assert torch.allclose(_hue(x, torch.zeros(16)), x, atol=1e-5)  # no turn: unchanged
    turned = _hue(x, torch.full((16,), 0.1))
    assert not torch.allclose(turned, x, atol=1e-2)
    assert torch.allclose(_hue(turned, torch.full((16,), -0.1)), x, atol=1e-5)  # and back
    coloured = color_distort(x, 0.5, g)
    assert coloured.min() >= 0 and coloured.max() <= 1
    z = torch.randn(16, 1, 32).expand(16, 2, 32)  # both views identical: every partner found
    loss, hits = nt_xent(z, 0.5)
    assert hits.item() == 32
    rand_loss, _ = nt_xent(torch.randn(16, 2, 32), 0.5)
    assert loss < rand_loss
    inputs, targets = task_for("simclr").batch(IMAGES, g)
    assert inputs.shape == (16, 2, 3, 32, 32) and len(targets) == 16
