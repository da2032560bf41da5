"""An arm run in parts (study/parts.py, study/run.py): each seed's logs recorded byte for byte, refused when
altered; the part size from the estimate; a stopped arm resumed with only the seeds its parts lack, then
assembled. The assembled comparison equals the compare stage's own over the same runs: the study command's
end-to-end test (tests/test_pipeline.py) checks that on real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfsup.core import paths
from selfsup.core.params import UserError
from study import parts as study_parts
from study import run as run_study
from study.protocol import load_protocol
from study.records import machine_label
from tests.test_protocol import write_protocol

MACHINE = {"cpu": "AMD EPYC", "cpu_id": "AuthenticAMD family 25 model 1 stepping 1", "cores": 2}


def fake_logs(seed: int) -> dict[str, bytes]:
    """What the stages of one seed leave in the workspace: dvclive logs, predictions, the probe's result."""
    files = {f"{paths.pretrain_log(seed)}/metrics.json": b'{"step": 9}',
             f"{paths.pretrain_log(seed)}/plots/metrics/train/loss.tsv": b"step\tloss\n0\t2.0\n",
             paths.probe_result(seed).as_posix(): json.dumps({"seed": seed}).encode()}
    for init in paths.INITS:
        files[f"{paths.finetune_log(init, seed)}/predictions.csv"] = f"index,actual,predicted\n0,cat,{init}\n".encode()
        files[f"{paths.finetune_log(init, seed)}/metrics.json"] = b'{"final": {}}'
    return files


def write_logs(root: Path, seeds: list[int]) -> None:
    for seed in seeds:
        for name, data in fake_logs(seed).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)


@pytest.fixture
def protocol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arms = [{"pretext": "context", "fractions": [0.1], "seeds": [0, 1, 2, 3, 4]},
            {"pretext": "context", "fractions": [1.0], "seeds": [0, 1], "probe_only": True}]
    return load_protocol(write_protocol(tmp_path, arms=arms, budgets={0.1: 8}, assumed_sd={0.1: 0.008},
                                        endpoints={"primary": {"pretext": "context", "fraction": 0.1},
                                                   "secondary": []}))


def test_a_seeds_logs_are_recorded_byte_for_byte_and_an_altered_one_is_refused(protocol, tmp_path):
    write_logs(tmp_path, [3, 4])
    exp = {"name": "context-0.1-s3-4", "baseline": "ab" * 20, "finished": 7, "params": {"seeds": [3, 4]}}
    written = study_parts.write_parts("context-0.1", [3, 4], exp, protocol.digest, MACHINE, 1234.56)
    assert [p.as_posix() for p in written] == ["metrics/arms/parts/context-0.1/seed3.json",
                                               "metrics/arms/parts/context-0.1/seed4.json"]
    parts = study_parts.read_parts("context-0.1")
    assert sorted(parts) == [3, 4] and parts[3]["part_seeds"] == [3, 4] and parts[4]["part_wall_seconds"] == 1234.6
    for seed in (3, 4):
        assert {n: study_parts.unpack(e, n) for n, e in parts[seed]["files"].items()} == fake_logs(seed)
    assert study_parts.experiments_of(list(parts.values())) == [
        {"experiment": "context-0.1-s3-4", "baseline": "ab" * 20, "finished": 7, "seeds": [3, 4], "machine": MACHINE,
         "wall_seconds": 1234.6}]  # one experiment for both seeds: its wall clock counts once

    entry = dict(parts[3]["files"]["metrics/runs/linear_probe/seed3.json"])
    entry["sha256"] = "0" * 64
    with pytest.raises(UserError, match="do not match their sha256"):
        study_parts.unpack(entry, "seed3.json")
    (tmp_path / "metrics/arms/parts/context-0.1/seed9.json").write_text(written[0].read_text())
    with pytest.raises(UserError, match="holds seed 3 of arm 'context-0.1': a part is named after both"):
        study_parts.read_parts("context-0.1")


def test_a_part_or_record_of_another_protocol_is_refused_by_its_path(protocol, tmp_path):
    write_logs(tmp_path, [3])
    exp = {"name": "context-0.1-s3", "baseline": "ab" * 20, "finished": 7, "params": {"seeds": [3]}}
    study_parts.write_parts("context-0.1", [3], exp, protocol.digest, MACHINE, 60.0)
    arm = protocol.arm("context", 0.1)
    assert sorted(run_study.done_parts(protocol, arm)) == [3]
    study_parts.write_parts("context-0.1", [3], exp, "f" * 40, MACHINE, 60.0)  # a renewed study's part
    with pytest.raises(UserError, match=r"^metrics/arms/parts/context-0.1/seed3.json was made under protocol sha1 "
                                        r"ffffffffffff, not .*a new protocol is a new study"):
        run_study.done_parts(protocol, arm)
    record = tmp_path / "metrics" / "arms" / "context-0.1.json"
    record.write_text(json.dumps({"arm": "context-0.1", "experiment": "context-0.1", "baseline": "ab" * 20,
                                  "finished": 7, "protocol_sha1": "e" * 40, "machine": MACHINE, "params": {}}))
    with pytest.raises(UserError, match=r"^metrics/arms/context-0.1.json was made under protocol sha1 eeeeeeeeeeee"):
        run_study.done_arms(protocol)


def test_a_part_of_a_seed_whose_runs_did_not_finish_is_refused(protocol, tmp_path):
    write_logs(tmp_path, [0])
    (tmp_path / paths.probe_result(0)).unlink()
    with pytest.raises(UserError, match="seed 0's run logs are not in the workspace .*linear_probe/seed0.json"):
        study_parts.seed_files(0)


def test_a_part_runs_its_seeds_without_the_arms_comparison(protocol):
    arm = protocol.arm("context", 0.1)
    cmd = run_study.command(protocol, arm, [2, 3])
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "context-0.1-s2-3"] and "seeds=[2,3]" in cmd
    assert cmd[-3:] == ["finetune_scratch", "finetune_pretrained", "linear_probe"]
    assert run_study.part_name(arm, [4]) == "context-0.1-s4"
    assert "compare" not in run_study.command(protocol, arm) and run_study.command(protocol, arm)[-1] != "linear_probe"


def test_the_part_size_fits_the_estimate(protocol):
    arm = protocol.arm("context", 0.1)  # budget 8 epochs
    rate = {"pretrain_seconds": 180, "finetune_epoch_seconds": 20, "arm_other_seconds": 100}  # 500 s a seed
    assert run_study.seeds_per_part(protocol, arm, rate, 60) == 7  # all 5: the arm runs whole
    assert run_study.seeds_per_part(protocol, arm, rate, 20) == 2
    assert run_study.seeds_per_part(protocol, arm, rate, 1) == 1
    probe = next(a for a in protocol.arms if a.probe_only)
    assert run_study.seeds_per_part(protocol, probe, rate, 1) == 2  # never split


def test_a_stopped_arm_runs_only_the_seeds_its_parts_lack_then_is_assembled(protocol, monkeypatch, capsys):
    arm = protocol.arm("context", 0.1)
    recorded = {0: {}, 1: {}}  # an earlier session, maybe another machine, recorded seeds 0 and 1
    commands, assembled = [], []
    monkeypatch.setattr(run_study, "done_arms", lambda p: {})
    monkeypatch.setattr(run_study, "done_parts", lambda p, a: dict(recorded))
    monkeypatch.setattr(run_study, "run_child", lambda cmd: commands.append(cmd) or 0)
    monkeypatch.setattr(run_study, "record_part",
                        lambda p, a, seeds, commit, wall: recorded.update(dict.fromkeys(seeds, {})))
    monkeypatch.setattr(run_study, "record_assembled", lambda p, a, commit: assembled.append(a.name))
    ran: list[str] = []
    run_study.run_arms(protocol, [arm], plan=False, commit=False, ran=ran, part_minutes=25)  # 620 s a seed: 2 a part
    assert [c[4] for c in commands] == ["context-0.1-s2-3", "context-0.1-s4"]
    assert assembled == ran == ["context-0.1"] and sorted(recorded) == [0, 1, 2, 3, 4]
    out = capsys.readouterr().out
    assert "in parts of 2 seeds" in out and "part context-0.1-s2-3: 2/5 seeds recorded" in out, out

    commands.clear()  # every seed recorded, the arm not yet assembled (stopped in between): nothing runs
    run_study.run_arms(protocol, [arm], plan=False, commit=False, ran=[], part_minutes=600)
    assert commands == [] and assembled == ["context-0.1", "context-0.1"]


def test_the_plan_counts_only_the_seeds_left(protocol, monkeypatch, capsys):
    arm = protocol.arm("context", 0.1)
    monkeypatch.setattr(run_study, "done_arms", lambda p: {})
    monkeypatch.setattr(run_study, "done_parts", lambda p, a: {0: {}, 1: {}, 2: {}} if a == arm else {})
    run_study.run_arms(protocol, [arm], plan=True, commit=False, ran=[], part_minutes=5)
    out = capsys.readouterr().out
    assert "left (3/5 seeds recorded in parts)" in out and "(in parts of 1 seeds)" in out, out
    # 2 seeds left: 2 pretrainings (300 s) and 2 x 2 fine-tunes of 8 epochs (20 s) + the arm's 100 s
    assert "study: 0/1 arms recorded, about 22 min left" in out, out


def test_a_record_of_several_machines_names_each():
    other = MACHINE | {"cpu_id": "AuthenticAMD family 25 model 17 stepping 1"}
    assert machine_label([MACHINE, other]) == ("AMD EPYC (AuthenticAMD family 25 model 1 stepping 1), 2 cores + "
                                              "AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), 2 cores")
