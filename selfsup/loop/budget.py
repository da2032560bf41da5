"""The fine-tune budget of a run: how many epochs (passes over the 100 % labelled pool) its fraction gets."""

from __future__ import annotations

from typing import Any

from selfsup.core.params import param


def finetune_epochs(params: dict[str, Any]) -> int:
    """The fine-tune budget of this run's `fraction`: its entry in `finetune.epochs_by_fraction` (a list of
    [fraction, epochs] pairs), else `finetune.epochs`. Epochs count passes over the 100 % labelled pool."""
    fraction = param(params, "fraction")
    # an experiment made before the param existed has none: the same as [] (the stages check it is there)
    for entry_fraction, epochs in params["finetune"].get("epochs_by_fraction", []):
        if abs(entry_fraction - fraction) < 1e-9:
            return epochs
    return param(params, "finetune.epochs")
