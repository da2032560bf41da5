"""What is generated from the param declarations (selfsup/config.py) is up to date: conf/config.yaml, the pretext
groups, docs/params.md's table and the README's knob table. A changed default, rule or meaning there fails here,
naming the file and the param, until `python -m tools.params_doc` writes them again."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from selfsup import config
from tools import params_doc


@pytest.mark.parametrize("path", list(params_doc.generated()), ids=lambda p: p.relative_to(params_doc.ROOT).as_posix())
def test_generated_files_are_what_the_declarations_say(path):
    assert params_doc.first_difference(path, params_doc.generated()[path]) is None


def test_a_changed_default_is_named_in_the_failure(monkeypatch):
    info = config.Finetune.model_fields["lr"]
    monkeypatch.setattr(info, "default", 0.3)
    problem = params_doc.first_difference(params_doc.CONFIG, params_doc.config_yaml())
    assert problem is not None and "lr: 0.3" in problem and "conf/config.yaml" in problem
    table = params_doc.generated()[params_doc.PARAMS_DOC]
    assert "| `finetune.lr` | 0.3 |" in table


def test_every_param_is_in_the_reference_table_once():
    table = params_doc.params_table()
    for key in config.fields():
        assert table.count(f"| `{key}` |") == 1, key


def test_the_readme_knobs_are_params():
    assert set(params_doc.KNOBS) <= set(config.fields())


def test_hardware_yaml_holds_the_hardware_knobs():
    import yaml

    assert set(yaml.safe_load((params_doc.ROOT / "hardware.yaml").read_text())) == config.hardware_knobs()


def test_the_budgets_are_written_once_in_protocol_yaml():
    """The committed protocol's profile holds its fine-tune budgets between tools.params_doc's markers, so they are
    generated from protocol.yaml (and checked by the test above), never kept equal by hand."""
    from study.protocol import load_protocol

    profile = params_doc.PROFILES / f"{load_protocol(params_doc.PROTOCOL_FILE).profile}.yaml"
    assert params_doc.BUDGETS_BEGIN in profile.read_text() and profile in params_doc.generated()
    protocol = load_protocol(params_doc.PROTOCOL_FILE)
    chosen = {f: e for f, e in protocol.budgets.items() if e is not None}
    default = protocol.planned_budget(protocol.arm("context", 0.1))
    assert params_doc.profile_budgets() == (f"  epochs: {default}\n  epochs_by_fraction: "
                                            f"{json.dumps([[f, e] for f, e in sorted(chosen.items()) if e != default])}\n")


COMMANDS = ["study.run", "study.report", "study.budgets", "study.tune", "study.pretext_table", "tools.params_doc",
            "tools.bench", "tools.precision_check"]


@pytest.mark.parametrize("module", COMMANDS)
def test_a_command_help_opens_with_its_docstring_first_paragraph_whole(module, monkeypatch, capsys):
    # `-h` printed the docstring's first line, cut mid-sentence where the paragraph ran on
    command = importlib.import_module(module)
    monkeypatch.setattr(sys, "argv", [module, "-h"])
    with pytest.raises(SystemExit) as exited:
        command.main()
    assert exited.value.code == 0
    first_paragraph = " ".join(command.__doc__.split("\n\n")[0].split())
    assert first_paragraph in " ".join(capsys.readouterr().out.split())
