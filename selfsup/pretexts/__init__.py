"""The pretext tasks, by the name `pretext.task` gives: the one list of them. A task is the module of that name
in this package, holding the `PretextTask` subclass named here (see base.py); adding a task is that module, its
params section in selfsup/config.py and one line here. Importing this package loads no task and no torch, so
checking params stays cheap, and the pretrain stage depends on the chosen task's module alone (dvc.yaml:
`selfsup/pretexts/${pretext.task}.py`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from selfsup.pretexts.base import PretextTask

TASKS: dict[str, str] = {  # name (= module) -> class
    "context": "Context",
    "reconstruction": "Reconstruction",
    "rotation": "Rotation",
    "jigsaw": "Jigsaw",
    "simclr": "SimCLR",
}


def task_class(name: str) -> type[PretextTask]:
    """The class of the task `name`, its module imported now."""
    if name not in TASKS:
        from selfsup.core.params import UserError

        raise UserError(f"param 'pretext.task' is {name!r}: choose one of {', '.join(TASKS)}")
    return getattr(importlib.import_module(f"selfsup.pretexts.{name}"), TASKS[name])


def build_task(params: dict[str, Any], image_size: int, mean: torch.Tensor, std: torch.Tensor) -> PretextTask:
    """The task `pretext.task` names, its own params read."""
    from selfsup.core.params import param

    return task_class(param(params, "pretext.task"))(params, image_size, mean, std)


__all__ = ["TASKS", "build_task", "task_class"]
