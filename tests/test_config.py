"""Every param is declared once (selfsup/config.py) and checked at the start of every stage: unknown keys (with a
suggestion), types, ranges, choices, one line naming the param."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from selfsup import config as schema
from selfsup import pretexts
from selfsup.loop.budget import finetune_epochs
from selfsup.core.params import UserError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text()) | yaml.safe_load((ROOT / "hardware.yaml").read_text())
# every task's section (params.yaml holds the chosen task's alone): every param has a key to break
PARAMS["pretext"].update({t: schema.defaults(c) for t, c in schema.TASK_PARAMS.items() if t not in PARAMS["pretext"]})


def with_value(key: str, value):
    params = copy.deepcopy(PARAMS)
    node = params
    *path, leaf = key.split(".")
    for part in path:
        node = node[part]
    node[leaf] = value
    return params


def leaves(params: dict, prefix: str = "") -> list[str]:
    return [k for key, v in params.items()
            for k in (leaves(v, f"{prefix}{key}.") if isinstance(v, dict) else [f"{prefix}{key}"])]


def test_committed_params_pass_and_every_param_is_declared():
    schema.check_files(ROOT / "params.yaml", ROOT / "hardware.yaml")
    schema.check_params(PARAMS)
    assert set(leaves(PARAMS)) == set(schema.fields())  # every param declared, every declaration a param


def test_each_task_has_its_params_section_and_one_name():
    assert list(schema.TASK_PARAMS) == list(pretexts.TASKS)
    for name in pretexts.TASKS:
        assert pretexts.task_class(name).__module__ == f"selfsup.pretexts.{name}"  # name = module = dvc.yaml's dep


def test_the_hardware_knobs_are_declared_once():
    assert schema.hardware_knobs() == {"device", "nproc", "compile", "precision", "stream", "data_location"}


def test_the_declared_defaults_pass():
    schema.check_params(schema.defaults(tasks=True) | schema.defaults(schema.Hardware))


def test_each_file_holds_its_own_keys(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text() + "device: cpu\n")
    (tmp_path / "hardware.yaml").write_text((ROOT / "hardware.yaml").read_text())
    with pytest.raises(UserError, match="param 'device' is a hardware knob: set it in .*hardware.yaml, not .*params.yaml"):
        schema.check_files(tmp_path / "params.yaml", tmp_path / "hardware.yaml")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "hardware.yaml").write_text("device: cpu\nfraction: 0.5\n")
    with pytest.raises(UserError, match="holds 'fraction', which is no hardware knob"):
        schema.check_files(tmp_path / "params.yaml", tmp_path / "hardware.yaml")
    (tmp_path / "hardware.yaml").write_text("device: cpu\n")
    with pytest.raises(UserError, match="param 'nproc' is missing from hardware.yaml"):
        schema.check_files(tmp_path / "params.yaml", tmp_path / "hardware.yaml")


@pytest.mark.parametrize("key", sorted(schema.fields()))
def test_a_wrong_type_names_the_key(key):
    bad = {"kind": "not-a-value"} if schema.fields()[key].annotation is not str else 12345
    with pytest.raises(UserError, match=f"param '{key}' is "):
        schema.check_params(with_value(key, bad))


@pytest.mark.parametrize("key,value,allowed", [
    ("fraction", 0.0, "must be > 0"), ("fraction", 1.5, "must be <= 1"), ("pretext.lr", -1.0, "must be > 0"),
    ("pretext.task", "colorization", "choose one of context, reconstruction, rotation, jigsaw, simclr"),
    ("data.source", "imagenet", "choose one of cifar10, cifar10-jpeg, cifar100, stl10, folder"),
    ("compile", "yes", "expected bool"), ("data.digest", "abc", "expected sha256:<64 hex digits>, or empty"),
    ("seeds", [], "non-empty list of integers"), ("seeds", [1, 1], "must differ"), ("probe.C", [0.1, -1], "positive"),
    ("data.image_size", 4, "must be >= 8"), ("pretext.context.fusion", "late", "choose one of pooled, spatial"),
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


def test_a_task_without_its_section_says_how_to_select_it():
    params = copy.deepcopy(PARAMS)
    del params["pretext"]["rotation"]
    params["pretext"]["task"] = "rotation"  # -S pretext.task=rotation instead of the group -S pretext=rotation
    with pytest.raises(UserError, match="param 'pretext.rotation' is missing from params.yaml: .*-S pretext=rotation"):
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


def test_model_code_must_be_the_code_that_builds_the_arch():
    params = with_value("model.arch", "nets.fast_cnn:half")  # edited by hand, model.code left at resnet18's
    params["model"]["code"] = "selfsup/training"
    with pytest.raises(UserError, match="param 'model.code' is 'selfsup/training' but model.arch 'nets.fast_cnn:half' "
                                        "is built by 'nets'"):
        schema.check_params(params)
    params["model"]["code"] = "nets"
    schema.check_params(params)
