"""Every param the pipeline knows, with its type and allowed values: the one place that says so (a stage's
`param(params, key)` applies these rules). Every stage checks all of params.yaml against this at its
start, before it reads data or writes anything: a mistyped key (with the closest known
one suggested), a wrong type, a value out of range or not among the choices stops it with one line."""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

from selfsup.params import UserError, param

NUMBER = (int, float)
POSITIVE = {"kind": float, "low": 0, "low_open": True}
EPOCHS = {"kind": int, "low": 1}
WARMUP = {"kind": NUMBER, "low": 0}
BATCH = {"kind": int, "low": 2}
DECAY = {"kind": float, "low": 0}
SHARE = {"kind": float, "low": 0, "high": 1}
GRID = {"upscale": {"kind": int, "low": 1}, "patch_size": {"kind": int, "low": 4}, "gap": {"kind": int, "low": 0},
        "jitter": {"kind": int, "low": 0}}


# Choices defined by the modules that implement them (tests/test_schema.py checks that they agree); named
# here so that checking params imports nothing else and stays one cheap dependency of every stage.
SOURCES = ["cifar10", "cifar100", "stl10", "folder"]        # selfsup.data.SOURCES
STEMS = ["cifar", "half", "imagenet"]                               # selfsup.models.STEMS
TASKS = ["context", "reconstruction", "rotation", "jigsaw", "simclr"]  # selfsup.pretexts.TASKS
PRECISIONS = ["auto", "bf16", "fp16", "fp32"]                       # selfsup.engine.PRECISIONS


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, NUMBER) and not isinstance(v, bool)


@cache
def spec() -> dict[str, dict[str, Any]]:
    """key -> keyword arguments of `selfsup.params.param` (`kind` first)."""
    return {
        "seeds": {"kind": list},
        "fraction": {"kind": float, "low": 0, "high": 1, "low_open": True},
        "device": {"kind": str, "choices": ["auto", "cpu", "cuda", "mps"]},
        "nproc": {"kind": int, "low": 1},
        "compile": {"kind": bool},
        "precision": {"kind": str, "choices": PRECISIONS},
        "stream": {"kind": str, "choices": ["auto", "always", "never"]},
        "profile_name": {"kind": str},
        "data.source": {"kind": str, "choices": SOURCES},
        "data.url": {"kind": (str, type(None))},
        "data.md5": {"kind": (str, type(None))},
        "data.path": {"kind": str},
        "data.image_size": {"kind": (int, type(None))},
        "split.val_fraction": {"kind": float, "low": 0, "high": 0.5, "low_open": True},
        "model.arch": {"kind": str},
        "model.stem": {"kind": str, "choices": STEMS},
        "pretext.task": {"kind": str, "choices": TASKS},
        "pretext.epochs": EPOCHS,
        "pretext.batch_size": BATCH,
        "pretext.lr": POSITIVE,
        "pretext.weight_decay": DECAY,
        "pretext.warmup_epochs": WARMUP,
        **{f"pretext.{task}.{key}": rule for task in ("context", "jigsaw") for key, rule in GRID.items()},
        "pretext.context.gray_prob": SHARE,
        "pretext.context.brightness": {"kind": float, "low": 0, "high": 1},
        "pretext.context.contrast": {"kind": float, "low": 0, "high": 1},
        "pretext.context.flip": {"kind": bool},
        "pretext.context.crop_min": {"kind": float, "low": 0.25, "high": 1},
        "pretext.context.fusion": {"kind": str, "choices": ["pooled", "spatial"]},
        "pretext.jigsaw.rescale_prob": SHARE,
        "pretext.jigsaw.rescale_min": {"kind": float, "low": 0.1, "high": 1},
        "pretext.probe_size": {"kind": int, "low": 20},
        "pretext.eval_batch_size": {"kind": int, "low": 1},
        "pretext.jigsaw.permutations": {"kind": int, "low": 2, "high": 1000},
        "pretext.rotation.crop_padding": {"kind": int, "low": 0},
        "pretext.reconstruction.mask_ratio": {"kind": float, "low": 0, "high": 1, "low_open": True},
        "pretext.reconstruction.block": {"kind": int, "low": 1},
        "pretext.reconstruction.noise_std": DECAY,
        "pretext.reconstruction.visible_weight": DECAY,
        "pretext.simclr.temperature": POSITIVE,
        "pretext.simclr.crop_min": {"kind": float, "low": 0.01, "high": 1},
        "pretext.simclr.color_strength": SHARE,
        "pretext.simclr.projection_dim": {"kind": int, "low": 1},
        "finetune.epochs": EPOCHS,
        "finetune.epochs_by_fraction": {"kind": list},
        "finetune.batch_size": BATCH,
        "finetune.lr": POSITIVE,
        "finetune.weight_decay": DECAY,
        "finetune.warmup_epochs": WARMUP,
        "finetune.label_smoothing": {"kind": float, "low": 0, "high": 0.5},
        "finetune.crop_padding": {"kind": int, "low": 0},
        "finetune.eval_batch_size": {"kind": int, "low": 1},
        "probe.C": {"kind": list},
        "probe.max_iter": {"kind": int, "low": 1},
        "probe.batch_size": {"kind": int, "low": 1},
        "probe.calibration_images": {"kind": int, "low": 1},
        "probe.grid": {"kind": int, "low": 1, "high": 8},
        "compare.plateau": {"kind": float, "low": 0, "high": 1, "low_open": True},
        "compare.confidence": {"kind": float, "low": 0.5, "high": 0.999},
        "compare.amortise_over": {"kind": int, "low": 1},
    }


def leaves(params: dict[str, Any], known: set[str] = frozenset(), prefix: str = "") -> list[str]:
    """Dotted keys of every value that is not a mapping, or that is a known key (whatever its value)."""
    keys = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        keys += leaves(value, known, name + ".") if isinstance(value, dict) and name not in known else [name]
    return keys


def check_params(params: dict[str, Any]) -> None:
    """Check every param; the first problem is a UserError naming the key, the value and what is allowed."""
    known = spec()
    for key in leaves(params, set(known)):
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"param '{key}' is not a param of this pipeline: {hint}(see README, 'Params')")
    for key in known:
        param(params, key)
    for key, ok, what in (("seeds", is_int, "integers"), ("probe.C", lambda v: is_number(v) and v > 0,
                                                           "positive numbers")):
        values = param(params, key, list)
        if not values or not all(ok(v) for v in values):
            raise UserError(f"param '{key}' is {values!r}: expected a non-empty list of {what}")
    check_epochs_by_fraction(params["finetune"]["epochs_by_fraction"])  # a list: checked above
    if len(set(params["seeds"])) != len(params["seeds"]):
        raise UserError(f"param 'seeds' is {params['seeds']!r}: the seeds must differ")
    if params["compile"] and params["nproc"] > 1:
        raise UserError(f"param 'compile' is true with nproc={params['nproc']}: torch.compile breaks its graph at "
                        f"every synced BatchNorm of a multi-process run, so it is slower, not faster; set compile "
                        f"false or nproc 1")


def check_epochs_by_fraction(entries: list) -> None:
    """`finetune.epochs_by_fraction`: [fraction, epochs] pairs, fraction in (0, 1], epochs >= 1, no fraction twice."""
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and is_number(entry[0]) and 0 < entry[0] <= 1
                and is_int(entry[1]) and entry[1] >= 1):
            raise UserError(f"param 'finetune.epochs_by_fraction' holds {entry!r}: expected [fraction, epochs] pairs "
                            f"with 0 < fraction <= 1 and epochs >= 1, e.g. [[0.5, 16], [1.0, 32]]")
    fractions = [float(e[0]) for e in entries]
    if len(set(fractions)) != len(fractions):
        raise UserError(f"param 'finetune.epochs_by_fraction' is {entries!r}: a fraction appears twice")
