"""Reading params.yaml and hardware.yaml: one dotted key at a time. What each may hold is declared in
selfsup/config.py.

params.yaml holds what a run's numbers depend on: DVC tracks it (each stage its own keys) and `dvc exp show`
lists it. hardware.yaml holds how this machine runs them (device, processes, precision, compile, streaming):
no stage declares it, so changing it re-runs nothing, and each run records the numerics it resolved to instead.
Stages read both as one mapping, the hardware knobs at its top level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")
HARDWARE_FILE = Path("hardware.yaml")
# the fixed choices of two params, read both by their declaration (selfsup/config.py) and by the code that acts
# on them (training/models.py builds the stems; the bench and the precision check offer the precisions)
STEMS = ("cifar", "half", "imagenet")  # model.stem: the first layers build_extractor can give a network
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # precision: auto resolves to one of the others


class UserError(Exception):
    """A problem the user can fix (a param, a file); printed as one line, never as a traceback."""


def read_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path} not found: run the stage from the repository root")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise UserError(f"{path} must hold a mapping of params")
    return params


def load_params(path: Path = PARAMS_FILE, hardware: Path = HARDWARE_FILE) -> dict[str, Any]:
    """params.yaml with the hardware knobs of hardware.yaml added at its top level (`param(params, "device")`);
    without a hardware.yaml, params.yaml alone (a tool's; the stages check that it is there)."""
    params = read_mapping(path)
    return params | read_mapping(hardware) if hardware.exists() else params


def param(params: dict[str, Any], key: str) -> Any:
    """The value of a dotted key. Every stage has checked all of params.yaml against selfsup/config.py first,
    so this only reads; a missing key (params.yaml edited by hand mid-run, a tool's partial params) is a
    UserError naming it."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"param '{key}' is missing from params.yaml: add it (see docs/params.md)")
        node = node[part]
    return node
