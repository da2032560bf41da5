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

from stages.distributed import Dist
from stages.engine import Batch, classification_criterion, index_batches


class PretextTask:
    """Base class: a classification pretext scored by top-1 accuracy. Subclasses set `name`, `metric`,
    `chance` and `classes`, read their params in `__init__`, and implement `network` and `batch`."""

    name: ClassVar[str]
    metric: ClassVar[str] = "accuracy"   # what the criterion's score measures; logged as pretext_<metric>
    higher_is_better: ClassVar[bool] = True
    chance: float | None = None           # the metric of a network that learned nothing, if there is one

    def __init__(self, params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor):
        self.image_size = image_size
        self.mean, self.std = mean, std

    def network(self, extractor: nn.Module, feat_dim: int) -> nn.Module:
        raise NotImplementedError

    def batch(self, images: torch.Tensor, generator: torch.Generator | None) -> Batch:
        """(inputs, targets) for uint8 `images`; random numbers come from `generator` (on their device)."""
        raise NotImplementedError

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


def pretext_batches(task: PretextTask, images: Any, batch_size: int, steps: int, generator: torch.Generator,
                    dist: Dist = Dist()) -> Iterator[Batch]:
    """`steps` batches of the task's (inputs, targets), each drawn as one global batch from `images` (an
    `ImageStore` or a uint8 tensor) and cut to this rank's share."""
    for idx in index_batches(len(images), batch_size, steps, generator):
        inputs, targets = task.batch(images[idx], generator)
        yield dist.take(inputs), dist.take(targets)


@torch.no_grad()
def heldout_score(task: PretextTask, predict_fn, images: torch.Tensor, batch_size: int,
                  generator: torch.Generator) -> float:
    """The task's mean score on `images`, batches drawn with `generator` (seed it identically every time to
    score the same held-out examples; the few per-batch choices tasks draw from Python's `random`, to spare
    a device sync, are seeded from it too); `predict_fn` maps an iterable of inputs to concatenated outputs."""
    state = random.getstate()
    random.seed(generator.initial_seed())
    try:
        batches = [task.batch(images[i:i + batch_size], generator) for i in range(0, len(images), batch_size)]
    finally:
        random.setstate(state)
    outputs = predict_fn(inputs for inputs, _ in batches)
    total, start = 0.0, 0
    for _, targets in batches:
        n = len(targets)
        total += float(task.criterion(outputs[start:start + n].to(targets.device), targets)[1])
        start += n
    return total / max(start, 1)
