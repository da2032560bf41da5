"""The param reference (docs/params.md) and conf/config.yaml agree with selfsup/schema.py, the one place that
defines the params: every param is documented once, and nothing documented is not a param."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from selfsup.schema import leaves, spec

ROOT = Path(__file__).resolve().parents[1]


def documented_params() -> list[str]:
    """Keys named in the first column of docs/params.md's table; `a.b.c`, `d` names a.b.c and a.b.d."""
    keys = []
    for line in (ROOT / "docs" / "params.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", line.split("|")[1])
        prefix = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        keys += [names[0]] + [n if "." in n else prefix + n for n in names[1:]]
    return keys


def test_every_param_is_documented_once():
    keys = documented_params()
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    assert set(keys) == set(spec()) - {"profile_name"}


def test_config_holds_exactly_the_params():
    config = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    config.pop("defaults")
    assert set(leaves(config, set(spec()))) == set(spec()) - {"profile_name"}
