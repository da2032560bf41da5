"""What every training stage (pretrain, finetune) does around the engine, in one place.

- `TrainingStage.start`: read params.yaml, pick the device (and the torchrun process group), resolve the
  precision, print the announce line.
- `Recipe`: one params section (`pretext`, `finetune`) read and checked once, and the `Trainer` it builds
  (Nesterov SGD, warmup then cosine, over `epochs` x steps-per-epoch optimiser steps).
- `EpochLog`: the run's record, epoch by epoch: its dvclive log (rank 0 only), the resume checkpoint saved
  after every epoch (selfsup/loop/resume.py), and the wall clock summed across resumptions.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from dvclive import Live
from torch import nn

from selfsup.core import paths
import selfsup.loop.precision_choice as precision_choice
from selfsup.training.devices import announce, device_from_params, numerics
from selfsup.training.distributed import Dist, NullLive, all_sum, setup
from selfsup.training.engine import Batch, Trainer, resolve_precision, sgd, slow_hint
from selfsup.core.params import load_params, param
from selfsup.loop.budget import finetune_epochs
from selfsup.loop.resume import Resume


@dataclass(frozen=True)
class TrainingStage:
    """The params, processes, device and precision of one training stage run."""

    params: dict[str, Any]
    dist: Dist
    device: torch.device
    precision: str
    started: float  # time.perf_counter() when the stage started: its wall clock counts from here

    @classmethod
    def start(cls, name: str) -> TrainingStage:
        started = time.perf_counter()
        params = load_params()
        dist, device = setup(device_from_params(params))
        precision = stage_precision(params, device, dist)
        if dist.main:
            announce(name, device, precision)
        return cls(params, dist, device, precision, started)

    def numerics(self, trainer: Trainer) -> dict[str, object]:
        """This run's numerics record (selfsup.training.devices.numerics), for its summary: compile as the
        trainer resolved it (`auto` -> on or off)."""
        return numerics(self.device, self.precision, self.dist.world, bool(trainer.compiled))


def stage_precision(params: dict[str, Any], device: torch.device, dist: Dist = Dist()) -> str:
    """The param `precision` resolved for a stage of this study: on a CPU with bf16 instructions, `auto` is bf16
    only where a training step of the study's network (model.arch, model.stem) at its image size measured faster
    in it on this machine (selfsup/loop/precision_choice.py; cached, so every stage of the study on this
    machine, pretraining and fine-tunes alike, resolves the same). Under torchrun rank 0 measures and every
    process takes its verdict: processes timed apart could disagree, and DDP needs one precision."""
    meta_path = paths.DATASET / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"image_size": 32, "classes": [0] * 10}
    ask = precision_choice.bf16_faster(param(params, "model.arch"), param(params, "model.stem"), meta["image_size"],
                                       len(meta["classes"]), precision_choice.BATCH, device, announce=dist.main)

    def rank0s_verdict() -> bool:
        return all_sum([float(dist.main and ask())], dist, device)[0] > 0
    return resolve_precision(param(params, "precision"), device, rank0s_verdict)


@dataclass(frozen=True)
class Recipe:
    """The optimisation recipe of a params section: its keys are these fields' names."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    eval_batch_size: int

    @classmethod
    def read(cls, params: dict[str, Any], section: str) -> Recipe:
        """The recipe of `section`; a fine-tune's epochs are its fraction's budget (selfsup/loop/budget.py)."""
        recipe = cls(**{f.name: param(params, f"{section}.{f.name}") for f in fields(cls)})
        return replace(recipe, epochs=finetune_epochs(params)) if section == "finetune" else recipe

    def trainer(self, net: nn.Module, steps_per_epoch: int, stage: TrainingStage, **kwargs: Any) -> Trainer:
        """A Trainer for `epochs` x `steps_per_epoch` steps; `kwargs` go to Trainer (criterion, label_smoothing,
        memory_format)."""
        return Trainer(net, sgd(net, self.lr, self.weight_decay), self.epochs * steps_per_epoch,
                       int(self.warmup_epochs * steps_per_epoch), stage.device, dist=stage.dist,
                       compile=param(stage.params, "compile"), precision=stage.precision,
                       slow_hint=slow_hint(stage.params, stage.device), **kwargs)


class EpochLog:
    """A training run's dvclive log and resume checkpoint. `open` resumes (or starts) the run and returns the
    state a resumed run saved (None for a fresh one); `epochs()` then yields the epochs still to train; after
    each, `log` its metrics and `end_epoch`; `close` writes the summary; `finish` removes the checkpoint.

    Steps: with `initial` (metrics of the untrained network, logged as step 0 of a fresh run), step e is the
    end of epoch e; without, epoch e is step e - 1 (dvclive's own resume cannot tell step 0 from none)."""

    def __init__(self, name: str, live_dir: Path, fingerprint: str, stage: TrainingStage, epochs: int):
        self.main = stage.dist.main
        self.live_dir = live_dir
        self.epochs_total = epochs
        self.resume = Resume(name, fingerprint, live_dir if self.main else None)
        self.started = stage.started
        self.wall_before = 0.0
        self.first_epoch = 1
        self.live: Live | NullLive = NullLive()
        self.name = name
        self.seconds: defaultdict[str, float] = defaultdict(float)  # by part of the run, resumptions summed

    def open(self, trainer: Trainer, generator: torch.Generator | None,
             initial: Callable[[], dict[str, float]] | None = None) -> dict | None:
        state = self.resume.restore(trainer, generator)
        if state is not None:  # a checkpoint is saved after an epoch
            self.first_epoch, self.wall_before = state["epoch"] + 1, state["wall_seconds"]
            self.seconds.update(state.get("seconds", {}))
        self.live = (Live(str(self.live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=state is not None)
                     if self.main else NullLive())
        if initial is not None and state is None:
            self.log(initial())
            self.live.next_step()
        self.live.step = self.first_epoch if initial is not None else self.first_epoch - 1
        return state

    def epochs(self) -> range:
        return range(self.first_epoch, self.epochs_total + 1)

    def train(self, trainer: Trainer, batches: Iterable[Batch], steps: int, desc: str) -> dict[str, float]:
        """One epoch of training, its seconds counted to `train`, but measuring and compiling (compile: true
        or auto) to `compile`."""
        with self.timed("train"):
            stats = trainer.train_epoch(batches, steps, desc)
        self.seconds["train"] -= stats["compile_seconds"]
        self.seconds["compile"] += stats["compile_seconds"]
        return stats

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Count the block's seconds to `part` of the run (train, validation, probe, heldout, test, ...)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - start

    def log(self, metrics: dict[str, float]) -> None:
        with self.timed("logging"):
            for key, value in metrics.items():
                self.live.log_metric(key, value)

    @property
    def wall_seconds(self) -> float:
        """Seconds since the run first started, resumptions summed (the time between them not counted)."""
        return self.wall_before + time.perf_counter() - self.started

    def end_epoch(self, epoch: int, trainer: Trainer, generator: torch.Generator | None, **state: Any) -> None:
        """Close the epoch's log step and save the checkpoint (rank 0), with the stage's own `state`."""
        with self.timed("logging"):
            self.live.next_step()
        if self.main:
            with self.timed("checkpoint"):
                self.resume.save_epoch(epoch, trainer, generator, wall_seconds=self.wall_seconds,
                                       seconds=dict(self.seconds), **state)

    def time_spent(self) -> dict[str, Any]:
        """Where the run's wall time went: seconds and shares of each part, `other` the rest (start-up, data)."""
        wall = self.wall_seconds
        seconds = dict(self.seconds) | {"other": max(wall - sum(self.seconds.values()), 0.0)}
        return {"wall_seconds": wall, "seconds": seconds,
                "shares": {part: s / wall if wall > 0 else 0.0 for part, s in seconds.items()}}

    def close(self, summary: dict[str, Any]) -> None:
        """Write the summary, with where the time went (`time`), and print the shares (rank 0)."""
        spent = self.time_spent()
        if self.main:
            parts = sorted(spent["shares"].items(), key=lambda kv: -kv[1])
            print(f"{self.name}: {spent['wall_seconds']:.0f} s, " + ", ".join(f"{share:.0%} {part}" for part, share
                                                                            in parts if share >= 0.005))
        self.live.summary.update(summary | {"time": spent})
        self.live.end()

    def finish(self) -> None:
        if self.main:
            self.resume.clear()
