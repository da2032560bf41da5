"""The pretext tasks, by the name `pretext.task` gives. One module per task; adding a task is a module with a
`PretextTask` subclass (see base.py) and one line in TASKS."""

from __future__ import annotations

from typing import Any

import torch

from stages.common import param
from stages.pretexts.base import PretextTask, heldout_scores, pretext_batches
from stages.pretexts.context import Context
from stages.pretexts.jigsaw import Jigsaw
from stages.pretexts.reconstruction import Reconstruction
from stages.pretexts.rotation import Rotation
from stages.pretexts.simclr import SimCLR

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
