"""Reading params.yaml and checking one param: every violation is a one-line UserError that names the key."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


class UserError(Exception):
    """A problem the user can fix (a param, a file); printed as one line, never as a traceback."""


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path} not found: run the stage from the repository root")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise UserError(f"{path} must hold a mapping of params")
    return params


def param(params: dict[str, Any], key: str, kind: type | tuple[type, ...] | None = None, *,
          choices: Iterable[Any] | None = None, low: float | None = None, high: float | None = None,
          low_open: bool = False) -> Any:
    """Read a dotted key and check it; any violation is a UserError naming the key and what is allowed. With
    no rules given, the key's rules in selfsup/schema.py apply: one place says what each param may be."""
    if kind is None and choices is None and low is None and high is None:
        from selfsup.schema import spec  # imported here: schema builds on this module
        rules = dict(spec().get(key, {}))
        if rules:
            return param(params, key, rules.pop("kind"), **rules)
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"param '{key}' is missing from params.yaml: add it (see README, 'Params')")
        node = node[part]
    value = node
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise UserError(f"param '{key}' is {value!r}: expected {names}")
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise UserError(f"param '{key}' is {value!r}: choose one of {', '.join(map(str, choices))}")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise UserError(f"param '{key}' is {value!r}: must be {bound}")
    if high is not None and value > high:
        raise UserError(f"param '{key}' is {value!r}: must be <= {high}")
    return value
