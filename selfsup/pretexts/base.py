"""What every pretext task provides, and the batch stream the pretrain stage draws from it.

A task turns a batch of uint8 images (N x 3 x H x W, on the device) into (inputs, targets), wraps the feature
extractor in a network for those inputs (the network keeps it as `.extractor`; whatever else it holds, a
classifier or a decoder or a projection head, is dropped after pretraining), and scores the network's
outputs with a criterion (mean loss, summed per-example score) that the one training engine uses. Every
network returns one row per example, so outputs can be cut back into batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from selfsup.training.distributed import Dist
from selfsup.training.engine import Batch, classification_criterion, index_batches
from selfsup.training.models import PoolInput, last_adaptive_pool
from selfsup.core.params import UserError


class PretextTask:
    """Base class: a classification pretext scored by top-1 accuracy. Subclasses set `metric`, `chance` and
    `classes`, read their params in `__init__`, and implement `network` and `batch`. A task's name is its
    module's (selfsup/pretexts/<name>.py), the key of `selfsup.pretexts.TASKS`."""

    metric: ClassVar[str] = "accuracy"   # what the criterion's score measures; logged as pretext_<metric>
    chance: float | None = None           # the metric of a network that learned nothing, if there is one
    controls: ClassVar[tuple[str, ...]] = ()  # shortcut controls: variants of the held-out batch (control_batch)

    @property
    def name(self) -> str:
        return type(self).__module__.rsplit(".", 1)[1]

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        self.image_size = image_size
        self.mean, self.std = mean, std

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        raise NotImplementedError

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        """(inputs, targets) for uint8 `images`; random numbers come from `generator` (on their device)."""
        raise NotImplementedError

    def control_batch(self, images: torch.Tensor, generator: torch.Generator | None, control: str) -> Batch:
        """`batch` with one of `controls` applied: the same random draws, one cue removed."""
        raise NotImplementedError(f"{self.name} has no control {control!r}")

    def criterion(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return classification_criterion()(outputs, targets)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records about the task that made it."""
        return {"pretext": self.name}


class ClassifierHead(nn.Module):
    """Shared extractor applied to each of K views of an example, features concatenated, an MLP on top:
    the late-fusion design of context prediction and jigsaw (K = 2 and 9). Inputs: N x K x 3 x P x P."""

    def __init__(self, extractor: nn.Module, feat_dim: int, views: int, classes: int, hidden: int = 512):
        super().__init__()
        self.extractor = extractor
        self.head = nn.Sequential(nn.Linear(views * feat_dim, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, classes))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        n = views.shape[0]
        feats = self.extractor(views.flatten(0, 1)).reshape(n, -1)
        return self.head(feats)


class SpatialPairHead(nn.Module):
    """Shared extractor applied to both patches of a pair, fused *before* global pooling: the two feature
    maps the extractor's last adaptive pool receives (C x h x w each) are stacked along channels, mixed by
    a 1x1 convolution and flattened with their positions, so the head sees where in each patch a feature
    sits (pooled late fusion cannot: it keeps what, not where). Inputs: N x 2 x 3 x P x P."""

    def __init__(self, extractor: nn.Module, patch_size: int, classes: int, width: int = 128, hidden: int = 512):
        super().__init__()
        self.extractor = extractor
        pool = last_adaptive_pool(extractor)
        if pool is None:
            raise UserError("param 'pretext.context.fusion' is 'spatial' but the extractor has no global "
                            "adaptive pooling layer to fuse before: use fusion=pooled")
        self._pool_input = PoolInput(pool)  # keeps a map only while this head runs the extractor
        with torch.no_grad():
            was_training = extractor.training
            extractor.eval()
            c, h, w = self._feature_maps(torch.zeros(1, 3, patch_size, patch_size)).shape[1:]
            extractor.train(was_training)
        self.mix = nn.Sequential(nn.Conv2d(2 * c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * h * w, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, classes))

    def _feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self._pool_input.read(lambda: self.extractor(images))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        n = pairs.shape[0]
        maps = self._feature_maps(pairs.flatten(0, 1))
        return self.head(self.mix(maps.reshape(n, 2 * maps.shape[1], *maps.shape[2:])))


def pretext_batches(task: PretextTask, images: Any, batch_size: int, steps: int, generator: torch.Generator,
                    dist: Dist = Dist()) -> Iterator[Batch]:
    """`steps` batches of the task's (inputs, targets), each drawn as one global batch from `images` (an
    `ImageStore` or a uint8 tensor) and cut to this rank's share."""
    for idx in index_batches(len(images), batch_size, steps, generator):
        inputs, targets = task.batch(images[idx], generator)
        yield dist.take(inputs), dist.take(targets)


@torch.no_grad()
def heldout_scores(task: PretextTask, predict_fn, images: torch.Tensor, batch_size: int, seed: int
                   ) -> dict[str, float]:
    """The task's mean score on held-out `images`, and its controls, each on the same random draws (seeded
    by `seed` every time: the same examples every epoch). `predict_fn` maps an iterable of inputs to
    concatenated outputs. Keys: the task's metric; `control_<name>` for each of the task's controls, the
    same network scored on inputs with that cue removed; and, for classification tasks, `control_shuffled`,
    its predictions scored against the targets in random order (must sit at chance: a check that the
    scoring itself carries no label information)."""
    shuffle = torch.Generator().manual_seed(seed)

    def score(control: str | None) -> dict[str, float]:
        generator = torch.Generator(images.device).manual_seed(seed)
        state = random.getstate()
        random.seed(seed)  # the few per-batch choices tasks draw from Python's `random`, to spare a device sync
        try:
            batches = [task.batch(images[i:i + batch_size], generator) if control is None else
                       task.control_batch(images[i:i + batch_size], generator, control)
                       for i in range(0, len(images), batch_size)]
        finally:
            random.setstate(state)
        outputs = predict_fn(inputs for inputs, _ in batches)
        total, shuffled, start = 0.0, 0.0, 0
        for _, targets in batches:  # scored batch by batch: a contrastive task's score is per batch
            n = len(targets)
            out = outputs[start:start + n].to(targets.device)
            total += float(task.criterion(out, targets)[1])
            if control is None and task.chance is not None:  # a classification task: targets are class labels
                order = torch.randperm(n, generator=shuffle).to(targets.device)
                shuffled += float(task.criterion(out, targets[order])[1])
            start += n
        start = max(start, 1)
        return {task.metric: total / start} | ({"control_shuffled": shuffled / start}
                                               if control is None and task.chance is not None else {})

    scores = score(None)
    for control in task.controls:
        scores[f"control_{control}"] = score(control)[task.metric]
    return scores
