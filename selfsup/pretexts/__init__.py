"""The pretext tasks, by the name `pretext.task` gives. One module per task; adding a task is a module with a
`PretextTask` subclass (see base.py) and one line in TASKS."""

from __future__ import annotations

from typing import Any

import torch

from selfsup.params import param
from selfsup.pretexts.base import PretextTask, heldout_scores, pretext_batches
from selfsup.pretexts.context import Context
from selfsup.pretexts.jigsaw import Jigsaw
from selfsup.pretexts.reconstruction import Reconstruction
from selfsup.pretexts.rotation import Rotation
from selfsup.pretexts.simclr import SimCLR

TASKS: dict[str, type[PretextTask]] = {
    "context": Context,
    "reconstruction": Reconstruction,
    "rotation": Rotation,
    "jigsaw": Jigsaw,
    "simclr": SimCLR,
}


def build_task(params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor) -> PretextTask:
    """The task `pretext.task` names, its own params read and checked."""
    name = param(params, "pretext.task")
    return TASKS[name](params, image_size, mean, std)


__all__ = ["TASKS", "PretextTask", "build_task", "heldout_scores", "pretext_batches"]
