"""Reading params.yaml: one dotted key at a time. What each param may be is declared in selfsup/config.py."""

from __future__ import annotations

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
