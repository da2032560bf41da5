"""One fine-tune, set up in one place: the classifier (extractor from scratch or from a pretraining, then the
head, both from the seed), its images, its trainer and its batch stream. The `finetune@<init>` stage, the budget
search (study.budgets), the precision check and the benchmark all build theirs here, so the same inputs
give the same run wherever it is made.

`FineTune.from_stage` reads the recipe from params.yaml (what the stage, the budget search and the precision
check run); `FineTune(Setup(...), ...)` takes it spelled out (what the benchmark varies). Both inits use the same
classifier, recipe, seed and number of optimiser steps; only the extractor's initial weights differ. An "epoch"
is the number of steps of one pass over the full (100 %) labelled pool, whatever the fraction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from selfsup.core.dataset import Dataset
from selfsup.core.params import param
from selfsup.loop.training_stage import Recipe, TrainingStage
from selfsup.training.augment import labelled_batches, normalize
from selfsup.training.devices import device_generator, seed_everything
from selfsup.training.engine import Batch, chunks, classification_metrics
from selfsup.training.image_store import labelled_images, prefetched
from selfsup.training.models import Classifier, build_extractor, load_extractor


@dataclass(frozen=True)
class Setup:
    """What one fine-tune is, beside its images: network, init, seed and recipe."""

    arch: str
    stem: str
    init: str                   # scratch / pretrained
    seed: int
    recipe: Recipe              # epochs, batch, lr, weight decay, warm-up, inference batch
    label_smoothing: float
    crop_padding: int
    pretrained: Path | None = None  # the extractor's checkpoint, for init pretrained
    pretext: str | None = None      # the task the checkpoint must come from (checked)


class FineTune:
    """A classifier ready to fine-tune on `labelled` rows of the training set, scored on `validation` rows and,
    once, on the test set. `epoch_batches()` is one epoch's batch stream, `trainer` trains on it, `validate()`
    and `test()` score the current weights."""

    def __init__(self, setup: Setup, dataset: Dataset, meta: dict, labelled: np.ndarray, validation: np.ndarray,
                 stage: TrainingStage, stream: str = "never", memory_format: str = "auto", test: bool = True):
        self.setup, self.stage = setup, stage
        device = stage.device
        seed_everything(setup.seed)
        if setup.init == "scratch":
            extractor, feat_dim = build_extractor(setup.arch, setup.stem)
        else:
            assert setup.pretrained is not None, "a pretrained fine-tune needs its checkpoint"
            extractor, feat_dim = load_extractor(setup.pretrained, setup.arch, setup.stem, setup.pretext)
        torch.manual_seed(setup.seed)  # the head starts identical for both inits
        model = Classifier(extractor, feat_dim, len(dataset.classes))
        self.mean = torch.tensor(meta["mean"], device=device)
        self.std = torch.tensor(meta["std"], device=device)
        stores = labelled_images(dataset, labelled, validation, device, stream, test)  # test: only where it is read
        (self.train_x, train_y), (self.val_x, self.val_y) = stores[:2]
        self.test_x, self.test_y = stores[2] if test else (None, None)
        self.train_y = torch.from_numpy(train_y).to(device)
        self.steps = math.ceil((len(dataset.train_labels) - len(validation)) / setup.recipe.batch_size)
        self.trainer = setup.recipe.trainer(model, self.steps, stage, label_smoothing=setup.label_smoothing,
                                            memory_format=memory_format)
        self.generator = device_generator(setup.seed, device)

    @classmethod
    def from_stage(cls, stage: TrainingStage, dataset: Dataset, meta: dict, labelled: np.ndarray,
                   validation: np.ndarray, init: str, seed: int, pretrained: Path | None,
                   epochs: int | None = None, test: bool = True) -> FineTune:
        """The fine-tune params.yaml declares (`model`, `finetune`, its fraction's budget unless `epochs`);
        without `test` the test set is never read (budgets are chosen on validation)."""
        params = stage.params
        recipe = Recipe.read(params, "finetune")
        setup = Setup(param(params, "model.arch"), param(params, "model.stem"), init, seed,
                      recipe if epochs is None else replace(recipe, epochs=epochs),
                      param(params, "finetune.label_smoothing"), param(params, "finetune.crop_padding"),
                      pretrained if init == "pretrained" else None,
                      param(params, "pretext.task") if init == "pretrained" else None)
        return cls(setup, dataset, meta, labelled, validation, stage, param(params, "stream"), test=test)

    def epoch_batches(self) -> Iterator[Batch]:
        """One epoch of augmented batches (this rank's share), read ahead when the images stream."""
        batches = labelled_batches(self.train_x, self.train_y, self.setup.recipe.batch_size, self.steps,
                                   self.setup.crop_padding, self.mean, self.std, self.generator, self.stage.dist)
        return prefetched(batches) if self.train_x.stream else batches

    def train_epoch(self, desc: str) -> dict[str, float]:
        return self.trainer.train_epoch(self.epoch_batches(), self.steps, desc)

    def _logits(self, images) -> torch.Tensor:
        return self.trainer.predict(chunks(images, self.setup.recipe.eval_batch_size,
                                           lambda x: normalize(x, self.mean, self.std)))

    def validate(self) -> dict[str, float]:
        """Loss, accuracy and macro precision/recall/F1 of the current weights on the validation rows."""
        return classification_metrics(self._logits(self.val_x), self.val_y)

    def test(self) -> tuple[dict[str, float], torch.Tensor]:
        """The same on the test set, with the logits: read once per run, after its last epoch."""
        assert self.test_x is not None, "this fine-tune was built without the test set"
        logits = self._logits(self.test_x)
        return classification_metrics(logits, self.test_y), logits
