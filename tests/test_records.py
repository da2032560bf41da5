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
    assert names == ["context-0.1", "context-0.01", "context-1", "rotation-0.1", "context-0.01-x2", "rotation-0.5-probe"]
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
    probe = {s: {"labelled_size": 22500, **{i: {"test": {"accuracy": a}, "knn": {"test": {"accuracy": a - 0.1}}}
                                            for i, a in (("scratch", 0.3 + 0.01 * s), ("pretrained", 0.5 + 0.01 * s))}}
             for s in (0, 1, 2)}
    probe_record = record_of(fake_experiment("rotation", 0.5, [0, 1, 2], [0.0] * 3), "rotation-0.5-probe", protocol)
    del probe_record["compare"]
    records.write_record(probe_record | {"probes": {str(s): v for s, v in probe.items()}}, tmp_path)
    read = records.read_records(tmp_path)
    assert sorted(read) == sorted(names + ["rotation-0.5-probe"])
    study = study_module.build_study([records.as_experiment(r) for r in read.values()], protocol, partial=True)
    direct = study_module.build_study(full_set(), protocol, partial=True)
    assert study["endpoints"] == direct["endpoints"]
    assert study["missing_arms"] == ["context-0.01-x2"]
    row = next(r for r in study["probes"] if r["pretext"] == "rotation" and r["fraction"] == 0.5)
    assert row["labelled_size"] == 22500 and row["seeds"] == [0, 1, 2]
    assert row["probe_pretrained"]["mean"] == pytest.approx(0.51) and row["knn_scratch"]["mean"] == pytest.approx(0.21)
    assert [(r["pretext"], r["fraction"]) for r in study["probes"]] == [
        ("context", 0.01), ("context", 0.1), ("context", 1.0), ("rotation", 0.1), ("rotation", 0.5)]
    assert {a["machine"]["cpu"] for a in study["arms"]} == {"AMD EPYC"} and study["arms"][0]["wall_seconds"] == 1234.5
    assert "AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), 2 cores" == records.machine_label(
        study["arms"][0]["machine"])
    from study.report_text import render
    text = render(study)
    assert "| context-0.1 | AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), 2 cores | 43 min | 21 min |" in text
    assert "| rotation-0.5-probe | AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), 2 cores | 1.7 min | 21 min |" \
        in text and "| context-0.01-x2 | not run | 23 min | - |" in text and "| all | 1 machine(s) | " in text
    assert "| rotation | 22,500 (50%) | 3 | 0.3100 [0.2852, 0.3348] | 0.5100 [" in text


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


def test_the_crossover_is_where_the_interval_stays_inside_the_margin():
    from study.report_text import crossover_lines
    from study.results import crossover

    def arm(f, low, high, pretext="context", factor=1):
        return {"pretext": pretext, "fraction": f, "budget_factor": factor,
                "tests": {"m": {"difference": {"ci_low": low, "ci_high": high}}}}
    arms = [arm(0.01, 0.05, 0.09), arm(0.02, -0.002, 0.02), arm(0.05, -0.004, 0.006), arm(0.1, -0.006, 0.004),
            arm(0.01, -0.005, 0.005, factor=2), arm(0.01, 0.01, 0.03, "rotation")]
    assert crossover(arms, "context", "m", 0.01) == {"fractions": [0.01, 0.02, 0.05, 0.1], "first_inside": 0.05,
                                                     "last_outside": 0.02}
    arms[2] = arm(0.05, -0.004, 0.012)  # outside again at 5 %: the crossover is where it stays inside
    assert crossover(arms, "context", "m", 0.01)["first_inside"] == 0.1
    assert crossover(arms, "rotation", "m", 0.01)["first_inside"] is None
    study = {"protocol": {"margin": 0.01}, "crossover": {"context": crossover(arms, "context", "m", 0.01),
                                                         "rotation": crossover(arms, "rotation", "m", 0.01)}}
    assert crossover_lines(study) == [
        "- **Where does context stop paying?** Its gain's 95 % interval lies inside ±0.01 from 10% on (at 5% it did "
        "not), so the crossover lies between 5% and 10% (read off the curve, not tested)."]


def test_a_budget_left_to_the_search_file_is_fixed_by_it_before_its_arms_run(tmp_path, monkeypatch):
    """`budgets: {0.5: chosen}` with `budget_source`: the protocol declares the rule, the search file (validation
    only) the number; until it has one the arms of that share wait, and the plan assumes twice the largest."""
    monkeypatch.chdir(tmp_path)
    arms = PROTOCOL["arms"] + [{"pretext": "context", "fractions": [0.5], "seeds": [0, 1, 2]}]
    path = write_protocol(tmp_path, budgets={0.01: 4, 0.1: 8, 1.0: 32, 0.5: "chosen"}, arms=arms,
                          budget_source="budgets.json")
    waiting = load_protocol(path)
    arm = waiting.cell_arms("context", 0.5)[0]
    assert waiting.budgets[0.5] is None and waiting.planned_budget(arm) == 64 and waiting.chosen == (0.5,)
    with pytest.raises(UserError, match="the 50% budget is not chosen yet: .* leaves it to budgets.json"):
        waiting.budget(arm)
    (tmp_path / "budgets.json").write_text(json.dumps({"chosen": {"0.5": 16, "0.1": 8}}))
    fixed = load_protocol(path)
    assert fixed.budget(arm) == 16 and fixed.digest == waiting.digest  # the protocol did not change
    assert command(fixed, arm)[-2:] == ["-S", "finetune.epochs_by_fraction=[[0.5,16]]"]
    with pytest.raises(UserError, match="need `budget_source`"):
        load_protocol(write_protocol(tmp_path, budgets={0.01: 4, 0.1: 8, 1.0: 32, 0.5: "chosen"}, arms=arms))
    with pytest.raises(UserError, match="give epochs \\(an integer >= 1\\) or `chosen`"):
        load_protocol(write_protocol(tmp_path, budgets={0.01: 4, 0.1: 8, 1.0: "later"}))


def test_the_study_skips_arms_whose_budget_is_not_chosen(tmp_path, monkeypatch, capsys):
    from study import run as run_study
    monkeypatch.chdir(tmp_path)
    arms = PROTOCOL["arms"] + [{"pretext": "context", "fractions": [0.5], "seeds": [0, 1, 2]}]
    protocol = load_protocol(write_protocol(tmp_path, budgets={0.01: 4, 0.1: 8, 1.0: 32, 0.5: "chosen"}, arms=arms,
                                            budget_source="budgets.json"))
    names = ["context-0.1", "context-0.01", "context-1", "rotation-0.1"]
    monkeypatch.setattr(run_study, "done_arms", lambda p: {n: record_of(e, n, protocol)
                                                           for e, n in zip(full_set(), names)})
    monkeypatch.setattr(run_study.subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    monkeypatch.setattr(run_study.subprocess, "Popen", lambda *a, **k: pytest.fail("nothing may run"))
    ran: list[str] = []
    run_study.run_arms(protocol, ordered(protocol), plan=False, commit=False, ran=ran)
    assert ran == [] and "context-0.5: left, its budget is not chosen yet" in capsys.readouterr().out


def test_seeds_needed_grow_with_the_spread():
    from selfsup.analysis.stats import power_equivalence, seeds_needed
    assert seeds_needed(0.0035, 0.01) == 5  # the floor: the five seeds
    n = seeds_needed(0.01, 0.01)
    assert n > 5 and power_equivalence(n, 0.01, 0.01) >= 0.8 > power_equivalence(n - 1, 0.01, 0.01)
    assert seeds_needed(0.05, 0.01) is None and seeds_needed(0.0, 0.01) == 5
    assert seeds_needed(0.004, 0.01, power=0.0, half_width=0.003, least=2) == 10  # t(0.975, 9) 0.004 / sqrt 10


def search_file(chosen: dict, gains: dict[float, list[float]], rule: str = "two", tol: float = 0.005) -> dict:
    """A `study budgets` file: at each chosen share, scratch and pretrained validation runs at its budget for
    seeds 0-4, the pretrained ones `gains` above scratch."""
    runs = [{"fraction": f, "init": init, "seed": s, "epochs": chosen[str(f)], "labelled": int(45000 * f),
             "val_f1_macro": 0.6 + 0.01 * s + (g[s] if init == "pretrained" else 0.0)}
            for f, g in gains.items() for init in ("scratch", "pretrained") for s in range(5)]
    return {"seeds": [0, 1, 2, 3, 4], "rule": rule, "tol": tol, "runs": runs, "chosen": chosen}


def test_a_share_the_search_capped_answers_at_its_cap_and_says_so(tmp_path, monkeypatch):
    """`budget_rule: {..., cap: {share: B}}`: a search file that took the cap (`study budgets --cap B`, the rule
    having chosen nothing below it) fixes the budget at B and the share is `capped`; a file capped elsewhere or at
    another budget, or one that chose above the cap, is refused."""
    monkeypatch.chdir(tmp_path)
    spread = [0.0, 0.01, -0.01, 0.005, -0.005]
    arms = [{"pretext": "context", "fractions": [0.1, 0.01], "seeds": "chosen"}]
    declared = dict(budgets={0.1: "chosen", 0.01: "chosen"}, arms=arms, assumed_sd={0.1: "chosen", 0.01: "chosen"},
                    budget_source="budgets.json", endpoints={"primary": {"pretext": "context", "fraction": 0.1},
                                                             "secondary": [{"pretext": "context", "fraction": 0.01}]})
    search = {**search_file({"0.1": 16, "0.01": 32}, {0.1: spread, 0.01: spread}), "capped": {"0.01": 32}}
    (tmp_path / "budgets.json").write_text(json.dumps(search))
    protocol = load_protocol(write_protocol(tmp_path, budget_rule={"rule": "two", "tol": 0.005, "cap": {0.01: 32}},
                                            **declared))
    assert protocol.budget(protocol.arm("context", 0.01)) == 32 and protocol.capped == (0.01,)
    assert protocol.summary()["capped"] == [0.01]
    (tmp_path / "budgets.json").write_text(json.dumps({**search, "chosen": {"0.1": 16}, "capped": {}}))
    waiting = load_protocol(write_protocol(tmp_path, budget_rule={"rule": "two", "tol": 0.005, "cap": {0.01: 8}},
                                           **declared))
    assert waiting.budgets[0.01] is None and waiting.planned_budget(waiting.arm("context", 0.01)) == 8  # not 32
    (tmp_path / "budgets.json").write_text(json.dumps(search))
    with pytest.raises(UserError, match=r"caps the 1% budget at 32 epochs, but `budget_rule` declares no cap there"):
        load_protocol(write_protocol(tmp_path, budget_rule={"rule": "two", "tol": 0.005}, **declared))
    with pytest.raises(UserError, match=r"caps the 1% budget at 32 epochs, but `budget_rule` caps it at 16"):
        load_protocol(write_protocol(tmp_path, budget_rule={"rule": "two", "tol": 0.005, "cap": {0.01: 16}},
                                     **declared))
    (tmp_path / "budgets.json").write_text(json.dumps({**search, "capped": {}}))
    with pytest.raises(UserError, match=r"chose 32 epochs at 1%, above the cap `budget_rule` declares there \(16\)"):
        load_protocol(write_protocol(tmp_path, budget_rule={"rule": "two", "tol": 0.005, "cap": {0.01: 16}},
                                     **declared))
    with pytest.raises(UserError, match=r"`budget_rule` must be .* optionally with cap"):
        load_protocol(write_protocol(tmp_path, budget_rule={"rule": "two", "tol": 0.005, "max": 16}, **declared))


def test_seeds_and_spread_left_to_the_search_file_are_sized_by_its_paired_runs(tmp_path, monkeypatch, capsys):
    """`seeds: chosen` and `assumed_sd: chosen`: each share's seeds are the fewest its paired validation spread
    asks for (at the primary's share, an expected half-width within the margin too); a share the file has not
    sized yet is planned with the largest sized count, and its arms wait; the file must be made by the declared
    rule."""
    from selfsup.analysis.stats import seeds_needed
    from study import run as run_study
    from study.protocol import power_table
    monkeypatch.chdir(tmp_path)
    spread = [0.0, 0.01, -0.01, 0.005, -0.005]  # sd 0.0079: 7 seeds at the primary's share
    (tmp_path / "budgets.json").write_text(json.dumps(search_file({"0.1": 16}, {0.1: spread})))
    arms = [{"pretext": "context", "fractions": [0.1, 0.01], "seeds": "chosen"},
            {"pretext": "rotation", "fractions": [1.0], "seeds": [0, 1, 2], "probe_only": True}]
    path = write_protocol(tmp_path, budgets={0.1: "chosen", 0.01: "chosen"}, arms=arms, assumed_sd={0.1: "chosen",
                          0.01: "chosen"}, budget_source="budgets.json", budget_rule={"rule": "two", "tol": 0.005},
                          endpoints={"primary": {"pretext": "context", "fraction": 0.1},
                                     "secondary": [{"pretext": "context", "fraction": 0.01}]})
    protocol = load_protocol(path)
    primary, one = protocol.arm("context", 0.1), protocol.arm("context", 0.01)
    sd = float(__import__("numpy").std(spread, ddof=1))
    assert primary.seeds == tuple(range(seeds_needed(sd, 0.01, half_width=0.01))) == tuple(range(7))
    assert protocol.assumed_sd == {0.1: pytest.approx(sd), 0.01: None} and protocol.unsized == (0.01,)
    assert one.seeds == tuple(range(7)) and one.seeds_open and not primary.seeds_open  # planned as the largest
    assert protocol.ready(primary) == "" and "budget is not chosen yet" in protocol.ready(one)
    assert protocol.power(protocol.secondary[0])["detect_margin"] is None
    assert "| context at 1% | not chosen yet (7 planned) | not chosen yet |" in power_table(protocol)
    assert protocol.power(protocol.primary)["expected_half_width"] <= 0.01
    monkeypatch.setattr(run_study, "done_arms", lambda p: {})
    ran: list[str] = []
    monkeypatch.setattr(run_study.subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    monkeypatch.setattr(run_study.subprocess, "Popen", lambda *a, **k: pytest.fail("nothing may run"))
    run_study.run_arms(protocol, [one], plan=False, commit=False, ran=ran)
    assert ran == [] and "context-0.01: left, its budget is not chosen yet" in capsys.readouterr().out
    # the share chosen but its pretrained runs not made: the budget is fixed, the seeds still wait
    (tmp_path / "budgets.json").write_text(json.dumps(search_file({"0.1": 16, "0.01": 8}, {0.1: spread})))
    waiting = load_protocol(path)
    assert "seeds are not chosen yet" in waiting.ready(waiting.arm("context", 0.01))
    # a wider spread at 1 % asks for more seeds there, not at 10 %; the protocol's bytes never changed
    (tmp_path / "budgets.json").write_text(json.dumps(search_file({"0.1": 16, "0.01": 8},
                                                                  {0.1: spread, 0.01: [2 * g for g in spread]})))
    sized = load_protocol(path)
    assert len(sized.arm("context", 0.01).seeds) == seeds_needed(2 * sd, 0.01) > 7 and sized.unsized == ()
    assert sized.digest == protocol.digest and sized.summary()["seeds_chosen_by"]["not_yet"] == []
    (tmp_path / "budgets.json").write_text(json.dumps(search_file({"0.1": 16}, {0.1: spread}, rule="bound")))
    with pytest.raises(UserError, match="`budget_rule` is two with tol 0.005, but budgets.json was made with bound"):
        load_protocol(path)
    with pytest.raises(UserError, match="assumed_sd 'later' at 0.1"):
        load_protocol(write_protocol(tmp_path, assumed_sd={0.1: "later", 0.01: 0.02, 1.0: 0.01}))


def test_a_partial_record_commits_the_primary_arm_and_reports_what_has_run(protocol, monkeypatch):
    """`python -m study record --partial` (a study that spans sessions): once the primary arm is recorded, its
    params, lock and figures are applied and committed, and the report says the other arms have not run."""
    from types import SimpleNamespace

    from study import run as run_study
    primary = record_of(full_set()[0], "context-0.1", protocol)
    calls: list[tuple] = []
    staged = {"now": "params.yaml\n"}  # what `git diff --cached --name-only` says was staged
    monkeypatch.setattr(run_study, "git", lambda *a: calls.append(("git", *a)) or (staged["now"] if a[0] == "diff" else ""))
    monkeypatch.setattr(run_study.subprocess, "run",
                        lambda cmd, **k: calls.append(tuple(cmd)) or SimpleNamespace(returncode=0))
    monkeypatch.setattr(run_study, "done_arms", lambda p: {})
    with pytest.raises(UserError, match="have no record: `python -m study run` first$"):
        run_study.record(protocol, partial=True)  # no primary yet: nothing to commit
    monkeypatch.setattr(run_study, "done_arms", lambda p: {"context-0.1": primary})
    with pytest.raises(UserError, match=r"or `python -m study record --partial`"):
        run_study.record(protocol)  # the finished study's record needs every arm
    assert calls == []
    run_study.record(protocol, partial=True)
    # by its full ref: a renewed study re-runs its arms under the same names, which DVC then finds ambiguous
    baseline = primary["baseline"]
    assert ("dvc", "exp", "apply", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{primary['experiment']}") in calls
    assert calls.index(("git", "checkout", "--", ".")) < calls.index(next(c for c in calls if "report" in c))
    report = next(c for c in calls if c[1:4] == ("-m", "study", "report"))
    assert report[-1] == "--partial"
    subjects = [c[-1] for c in calls if c[:2] == ("git", "commit")]
    assert subjects[0].startswith("study: the primary arm context-0.1's params") and "not yet run" in subjects[1]
    calls.clear()
    staged["now"] = ""  # a later --partial with nothing new (the primary committed, no arm since): no empty commits
    run_study.record(protocol, partial=True)
    assert not [c for c in calls if c[:2] == ("git", "commit")] and any("report" in c for c in calls)
    # a machine without the primary's experiment (a later session's): its files committed as recorded and unchanged
    # since are not applied again; changed since, they are (and that needs the experiment)
    for changed in ("", "dvc.lock\n"):
        calls.clear()
        answers = {"log": "0123abc\n", "diff": changed}
        monkeypatch.setattr(run_study, "git", lambda *a, answers=answers: calls.append(("git", *a)) or answers.get(a[0], ""))
        run_study.record(protocol, partial=True)
        assert ("git", "log", "-1", "--format=%H", "--fixed-strings", f"--grep={subjects[0]}") in calls
        assert ("git", "diff", "--name-only", "0123abc", "HEAD", "--", *run_study.ARM_FILES) in calls
        applied = [c for c in calls if c[:3] == ("dvc", "exp", "apply")]
        assert bool(applied) == bool(changed) and any("report" in c for c in calls), calls
    calls.clear()  # a primary assembled from parts (study/parts.py) is no one experiment to apply: refused
    monkeypatch.setattr(run_study, "done_arms", lambda p: {"context-0.1": primary | {"parts": [{}, {}]}})
    with pytest.raises(UserError, match="the primary arm context-0.1 ran in parts: no one experiment holds"):
        run_study.record(protocol, partial=True)
    assert calls == []


def test_the_study_refuses_a_detached_head_and_puts_head_back_on_its_branch(tmp_path, monkeypatch):
    """A `dvc exp run` stopped before its cleanup leaves HEAD detached; records committed there would be on no
    branch, so `study run` refuses to start there, and after each arm puts HEAD back on the branch it began on."""
    import subprocess

    from study.run import current_branch, reattach
    monkeypatch.chdir(tmp_path)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    for n in (1, 2):
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", f"c{n}")
    assert current_branch() == "main"
    git("checkout", "-q", "--detach")
    with pytest.raises(UserError, match=r"^HEAD is detached at [0-9a-f]+ .*`git checkout main` first"):
        current_branch()
    reattach("main")
    assert current_branch() == "main" and git("status", "--porcelain") == ""
    git("checkout", "-q", "--detach", "HEAD~1")  # detached elsewhere: not this function's to move
    reattach("main")
    with pytest.raises(UserError, match="HEAD is detached"):
        current_branch()


CHILD = """
import pathlib, signal, sys, time
def stop(*_):
    time.sleep(1)  # a cleanup that takes a while, as DVC's does
    pathlib.Path("cleaned").write_text("yes")
    sys.exit(1)
signal.signal(signal.SIGINT, stop)
pathlib.Path("started").write_text("")
time.sleep(60)
"""


def test_ctrl_c_lets_the_running_arm_clean_up_before_the_study_stops(tmp_path):
    """Ctrl-C reaches the whole process group: `study run` waits for the arm's `dvc exp run` to finish its cleanup
    (which `subprocess.run` cuts off a quarter of a second in), then stops itself."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    # started with SIGINT ignored, as a script's background job is (and as one run of the suite found its worker):
    # `python -m study` takes it back (take_ctrl_c), or Ctrl-C would stop the arm's child and the study would go on
    # (run_command, as every `python -m study` command is run), then exits 130 in one line, no traceback
    driver = ("import sys\nfrom study.__main__ import run_command\nfrom study.run import run_child\n"
              "run_command(lambda: run_child([sys.executable, '-c', sys.argv[1]]))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ignored = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731 (in the driver, before its exec)
    proc = subprocess.Popen([sys.executable, "-c", driver, CHILD], cwd=tmp_path, env=env, start_new_session=True,
                            preexec_fn=ignored, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and proc.poll() is None, "the child never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "study: stopped by Ctrl-C", err
    assert "Traceback" not in err, err
    assert (tmp_path / "cleaned").read_text() == "yes"
