"""The study's record in Git (study/records.py) and the protocol's described and probe-only arms: a record per
arm, read back as the report takes experiments; the arms' names, commands and budgets; the refusals."""

from __future__ import annotations

import json

import pytest

from selfsup.core.params import UserError
from study import records
from study import results as study_module
from study.protocol import check_experiment, load_protocol
from study.run import chosen_arms, command, ordered, remaining_seconds
from tests.test_protocol import PROTOCOL, fake_experiment, full_set, write_protocol

EXTRA = [{"pretext": "context", "fractions": [0.01], "seeds": [0, 1, 2, 3], "budget_factor": 2},
         {"pretext": "rotation", "fractions": [0.5], "seeds": [0, 1, 2], "probe_only": True}]  # no 0.5 budget


@pytest.fixture
def protocol(tmp_path, monkeypatch):
    path = write_protocol(tmp_path, arms=PROTOCOL["arms"] + EXTRA, numerics={"precision": "fp32", "compile": False})
    monkeypatch.setattr(study_module, "protocol_file_at", lambda rev, p: path.read_bytes())
    monkeypatch.setattr(study_module, "check_same_code", lambda experiments: None)  # no Git commits here
    return load_protocol(path)


def record_of(exp: dict, arm: str, protocol) -> dict:
    return {"arm": arm, "experiment": exp["name"], "baseline": exp["baseline"], "finished": exp["finished"],
            "protocol_sha1": protocol.digest, "wall_seconds": 1234.5,
            "machine": {"cpu": "AMD EPYC", "cpu_id": "AuthenticAMD family 25 model 17 stepping 1", "cores": 2},
            "params": exp["params"], "compare": exp["compare"]}


def test_described_and_probe_only_arms_have_their_own_names_budgets_and_commands(protocol):
    names = [a.name for a in ordered(protocol)]
    assert names == ["context-0.1", "context-0.01", "rotation-0.1", "context-1", "context-0.01-x2", "rotation-0.5-probe"]
    double = protocol.arms[-2]
    assert protocol.budget(double) == 8 and protocol.arm("context", 0.01).budget_factor == 1  # endpoints: own budget
    assert command(protocol, double)[-4:] == ["-S", "hardware.yaml:compile=false",
                                              "-S", "finetune.epochs_by_fraction=[[0.01,8]]"]
    probe = command(protocol, protocol.arms[-1])
    assert probe[-1] == "linear_probe" and "hardware.yaml:precision=fp32" in probe
    # the probe-only arm costs its pretrainings, no fine-tune; the described arm its own scratch runs
    rate = {"pretrain_seconds": 300, "finetune_epoch_seconds": 20, "arm_other_seconds": 100}
    done = [a for a in protocol.arms if a.name in ("context-0.01", "rotation-0.1")]
    assert remaining_seconds(protocol, [protocol.arms[-1]], done, rate) == pytest.approx(3 * 0 + 100)
    assert remaining_seconds(protocol, [double], done, rate) == pytest.approx(4 * 2 * 8 * 20 + 100)
    with pytest.raises(UserError, match="--arms context-0.2: no such arm"):
        chosen_arms(protocol, ["context-0.2"])
    assert [a.name for a in chosen_arms(protocol, ["rotation-0.5-probe", "context-0.1"])] == [
        "context-0.1", "rotation-0.5-probe"]


def test_an_experiment_is_matched_to_its_arm_by_budget(protocol):
    exp = fake_experiment("context", 0.01, [0, 1, 2, 3], [0.0] * 4, budget=8)
    assert check_experiment(protocol, exp, 8).name == "context-0.01-x2"
    assert check_experiment(protocol, exp, 4).name == "context-0.01"
    with pytest.raises(UserError, match="fine-tuned 6 epochs at 0.01; .* declares 4 or 8"):
        check_experiment(protocol, exp, 6)


def test_the_protocol_refuses_malformed_arms_and_numerics(tmp_path):
    with pytest.raises(UserError, match="budget_factor must be an integer >= 1"):
        load_protocol(write_protocol(tmp_path, arms=[{**EXTRA[0], "budget_factor": 0}]))
    with pytest.raises(UserError, match="`numerics` must be"):
        load_protocol(write_protocol(tmp_path, numerics={"precision": "fp8"}))
    with pytest.raises(UserError, match="arm context-0.1 is declared twice"):
        load_protocol(write_protocol(tmp_path, arms=PROTOCOL["arms"] + [PROTOCOL["arms"][0]]))


def test_records_round_trip_into_the_report(protocol, tmp_path):
    """The report reads the records alone: written, read back and pooled, they give the study the experiments
    gave, with each arm's machine and wall clock."""
    names = ["context-0.1", "context-0.01", "context-1", "rotation-0.1"]
    for exp, name in zip(full_set(), names):
        records.write_record(record_of(exp, name, protocol), tmp_path)
    read = records.read_records(tmp_path)
    assert sorted(read) == sorted(names)
    study = study_module.build_study([records.as_experiment(r) for r in read.values()], protocol, partial=True)
    direct = study_module.build_study(full_set(), protocol, partial=True)
    assert study["endpoints"] == direct["endpoints"]
    assert study["missing_arms"] == ["context-0.01-x2", "rotation-0.5-probe"]
    assert {a["machine"]["cpu"] for a in study["arms"]} == {"AMD EPYC"} and study["arms"][0]["wall_seconds"] == 1234.5
    assert "AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), 2 cores" == records.machine_label(
        study["arms"][0]["machine"])
    from study.report_text import render
    text = render(study)
    assert "| context-0.1 | AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), 2 cores | 43 min | 21 min |" in text
    assert "| rotation-0.5-probe | not run | 1.7 min | - |" in text and "| all | 1 machine(s) | " in text


def test_a_bad_record_is_refused_in_one_line(tmp_path):
    (tmp_path / "context-0.1.json").write_text("{")
    with pytest.raises(UserError, match="context-0.1.json is not valid JSON"):
        records.read_records(tmp_path)
    (tmp_path / "context-0.1.json").write_text(json.dumps({"arm": "context-0.1"}))
    with pytest.raises(UserError, match="is no arm record \\(it lacks experiment"):
        records.read_records(tmp_path)
    with pytest.raises(ValueError):
        records.write_record({"arm": "x"}, tmp_path)


def test_machine_describes_this_cpu():
    m = records.machine()
    assert m["cores"] >= 1 and m["cpu"] and m["torch"] and isinstance(m["bf16_instructions"], bool)


def test_the_plan_lists_each_arms_share_and_sums_to_the_estimate(protocol):
    from study.markdown import minutes
    from study.run import plan_table
    table = plan_table(protocol, protocol.estimate).splitlines()
    assert table[2] == "| context-0.1 | 4 | 8 | 4 | 4 | 4 | 43 min |"  # 4 x 300 s + 4 x 2 x 8 x 20 s + 100 s
    assert "| rotation-0.5-probe | 3 | probe only | 0 | 0 | 0 |" in table[-2]  # rotation's pretrainings made before
    total = remaining_seconds(protocol, ordered(protocol), [], protocol.estimate)
    assert table[-1] == f"| all | | | | | | {minutes(total)} |"
