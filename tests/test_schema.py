"""Every param is checked at the start of every stage: unknown keys (with a suggestion), types, ranges, choices."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from selfsup import data, engine, models, pretexts, schema
from selfsup.finetune_budget import finetune_epochs
from selfsup.params import UserError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(key: str, value):
    params = copy.deepcopy(PARAMS)
    node = params
    *path, leaf = key.split(".")
    for part in path:
        node = node[part]
    node[leaf] = value
    return params


def test_committed_params_and_every_profile_pass():
    schema.check_params(PARAMS)
    assert set(schema.leaves(PARAMS)) == set(schema.spec())  # every param has a rule, every rule a param


def test_choices_agree_with_the_modules_that_implement_them():
    assert schema.SOURCES == list(data.SOURCES)
    assert schema.STEMS == list(models.STEMS)
    assert schema.TASKS == list(pretexts.TASKS)
    assert schema.PRECISIONS == list(engine.PRECISIONS)


@pytest.mark.parametrize("key", sorted(schema.spec()))
def test_a_wrong_type_names_the_key(key):
    bad = {"kind": "not-a-value"} if schema.spec()[key]["kind"] is not str else 12345
    with pytest.raises(UserError, match=f"param '{key}' is "):
        schema.check_params(with_value(key, bad))


@pytest.mark.parametrize("key,value,allowed", [
    ("fraction", 0.0, "must be > 0"), ("fraction", 1.5, "must be <= 1"), ("pretext.lr", -1.0, "must be > 0"),
    ("pretext.task", "colorization", "choose one of context, reconstruction, rotation, jigsaw, simclr"),
    ("data.source", "imagenet", "choose one of cifar10, cifar100, stl10, folder"), ("compile", "yes", "expected bool"),
    ("seeds", [], "non-empty list of integers"), ("seeds", [1, 1], "must differ"), ("probe.C", [0.1, -1], "positive"),
])
def test_a_bad_value_says_what_is_allowed(key, value, allowed):
    with pytest.raises(UserError, match=f"param '{key}' is .*{allowed}"):
        schema.check_params(with_value(key, value))


def test_compile_with_several_processes_is_refused_with_the_reason():
    params = with_value("compile", True)
    schema.check_params(params)  # one process: fine
    params["nproc"] = 2
    with pytest.raises(UserError, match="param 'compile' is true with nproc=2: .*synced BatchNorm"):
        schema.check_params(params)


def test_a_mistyped_key_suggests_the_right_one():
    params = copy.deepcopy(PARAMS)
    params["finetune"]["lrr"] = 0.1
    with pytest.raises(UserError, match="param 'finetune.lrr' is not a param of this pipeline: did you mean 'finetune.lr'"):
        schema.check_params(params)
    del params["finetune"]["lrr"]
    del params["finetune"]["lr"]
    with pytest.raises(UserError, match="param 'finetune.lr' is missing"):
        schema.check_params(params)


@pytest.mark.parametrize("entries,allowed", [
    ([[0.5]], "expected \\[fraction, epochs\\] pairs"), ([[1.5, 8]], "0 < fraction <= 1"),
    ([[0.5, 0]], "epochs >= 1"), ([[0.5, 2.5]], "epochs >= 1"), ([0.5], "pairs"),
    ([[0.5, 8], [0.5, 16]], "a fraction appears twice"),
])
def test_a_bad_fine_tune_budget_per_fraction_names_the_param(entries, allowed):
    with pytest.raises(UserError, match=f"param 'finetune.epochs_by_fraction' .*{allowed}"):
        schema.check_params(with_value("finetune.epochs_by_fraction", entries))


def test_the_fine_tune_budget_is_the_fractions_entry_else_epochs():
    params = with_value("finetune.epochs_by_fraction", [[0.5, 16], [1, 32]])
    params["finetune"]["epochs"] = 8
    schema.check_params(params)
    for fraction, epochs in ((0.1, 8), (0.5, 16), (1.0, 32), (0.25, 8)):
        params["fraction"] = fraction
        assert finetune_epochs(params) == epochs
    del params["finetune"]["epochs_by_fraction"]  # an experiment made before the param existed
    assert finetune_epochs(params) == 8
