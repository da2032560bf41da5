"""The protocol (protocol.yaml) and what the report and the study command do with it: the checks that refuse
runs differing from it, the endpoints' tests (primary alone, Holm over the declared secondaries, equivalence,
power), the plain answers, the running order and the time-left estimate. Experiments are made up here from the
same functions `compare` uses; the end-to-end test (tests/test_pipeline.py) runs the real ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from study import protocol as protocol_module
from selfsup.analysis.endpoints import PRIMARY, SECONDARY
from study.protocol import load_protocol, power_table
from selfsup.analysis.stats import holm, mean_ci, power_equivalence, power_paired, tost
from selfsup.core.params import UserError
from selfsup.analysis.compare import compare_inits, convergence
from study import results as study_module
from study.report_text import render, render_answer, verdict
from study.run import ordered, rates, remaining_seconds

ROOT = Path(__file__).resolve().parents[1]

PROTOCOL = {
    "question": "Does it help?",
    "profile": "cpu", "metric": "test_f1_macro", "alpha": 0.05, "margin": 0.01,
    "budgets": {0.01: 4, 0.1: 8, 1.0: 32},
    "arms": [{"pretext": "context", "fractions": [0.1, 0.01, 1.0], "seeds": {0.1: [0, 1, 2, 3], 0.01: [0, 1, 2, 3],
                                                                           1.0: [0, 1, 2]}},
             {"pretext": "rotation", "fractions": [0.1], "seeds": [0, 1, 2, 3]}],
    "endpoints": {"primary": {"pretext": "context", "fraction": 0.1},
                  "secondary": [{"pretext": "context", "fraction": 0.01}, {"pretext": "rotation", "fraction": 0.1},
                                {"pretext": "context", "fraction": 1.0}]},
    "assumed_sd": {0.01: 0.02, 0.1: 0.008, 1.0: 0.006},
    "sd_source": "made up",
    "estimate": {"pretrain_seconds": 300, "finetune_epoch_seconds": 20, "arm_other_seconds": 100},
}


def write_protocol(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump({**PROTOCOL, **changes}, sort_keys=False))
    return path


def fake_experiment(pretext: str, fraction: float, seeds: list[int], gains: list[float], name: str = "",
                    budget: int | None = None, profile: str = "cpu", finished: int = 1,
                    precision: str = "bf16") -> dict:
    """An experiment as study.experiments.read_experiment returns it, its compare.json made by compare's own
    functions from per-seed scratch scores and pretrained gains."""
    rng = np.random.default_rng(int(fraction * 1000) + len(pretext))
    scratch = 0.5 + fraction * 0.3 + rng.normal(0, 0.01, len(seeds))
    runs: dict[str, list[dict]] = {}
    for init, values in (("scratch", scratch), ("pretrained", scratch + np.array(gains))):
        runs[init] = [{**{k: float(v) for k in (PRIMARY, *SECONDARY, "knn_f1_macro")}, "val_loss_mean": 1.0,
                       "wall_seconds": 100.0, "pretrain_share_seconds": 0.0, "steps_to_threshold": 10,
                       "epochs_to_threshold": 1, "seconds_to_threshold": 5.0, "epochs_to_loss_threshold": 1}
                      for v in values]
    budgets = PROTOCOL["budgets"]
    compare = {
        "seeds": seeds, "runs": runs,
        "tests": compare_inits(runs, (PRIMARY, *SECONDARY, "val_loss_mean", "knn_f1_macro"), 0.95),
        "convergence": {i: convergence(runs[i]) for i in runs}, "threshold_val_f1": 0.5, "threshold_val_loss": 1.0,
        "per_class_f1": {i: [0.5] * 10 for i in runs}, "classes": [f"c{k}" for k in range(10)],
        "curves": {"epoch": [1, 2], "scratch_val_f1_macro": [0.4, 0.5], "pretrained_val_f1_macro": [0.4, 0.5]},
        "pretext": {"task": pretext, "metric": "accuracy", "chance": 0.25, "final_train": 0.9, "final_heldout": 0.8,
                    "controls": {}, "probe_random_extractor": 0.3, "probe_pretrained_extractor": 0.5,
                    "train_seconds": [250.0] * len(seeds)},
        "labelled_size": int(45000 * fraction), "test_size": 10000, "device": "cpu: test",
        "numerics": {kind: [{"precision": precision, "device": "cpu: test", "processes": 1, "compile": False,
                             "torch": "2", "torchvision": "0"}] for kind in ("finetune", "pretrain")},
        "pretrain_wall_seconds": 300.0 * len(seeds), "stage_wall_seconds": 300.0 * len(seeds) + 200.0 * len(seeds) + 50,
    }
    params = {"profile_name": profile, "fraction": fraction, "seeds": seeds,
              "data": {"source": "cifar10", "url": "", "md5": "", "path": ""},
              "model": {"arch": "nets.fast_cnn:half", "stem": "cifar"}, "compare": {"confidence": 0.95},
              "pretext": {"task": pretext, "epochs": 10, pretext: {"a": 1}},
              "finetune": {"epochs": 8, "epochs_by_fraction": [[f, e] for f, e in budgets.items() if f != 0.1]}}
    if budget is not None:
        params["finetune"]["epochs_by_fraction"] = [[fraction, budget]]
    return {"name": name or f"{pretext}-{fraction:g}", "baseline": "a" * 40, "finished": finished,
            "params": params, "compare": compare}


def full_set() -> list[dict]:
    return [fake_experiment("context", 0.1, [0, 1, 2, 3], [0.02, 0.018, 0.025, 0.021]),     # a clear gain
            fake_experiment("context", 0.01, [0, 1, 2, 3], [0.001, -0.002, 0.002, 0.0]),    # equivalent to none
            fake_experiment("context", 1.0, [0, 1, 2], [0.01, -0.01, 0.0]),                 # neither
            fake_experiment("rotation", 0.1, [0, 1, 2, 3], [0.05, 0.04, 0.06, 0.045])]


@pytest.fixture
def protocol(tmp_path, monkeypatch):
    path = write_protocol(tmp_path)
    monkeypatch.setattr(study_module, "protocol_file_at", lambda rev, p: path.read_bytes())
    return load_protocol(path)


def test_the_committed_protocol_declares_a_runnable_study():
    p = load_protocol(ROOT / "protocol.yaml")
    assert p.primary.pretext == "context" and p.primary.fraction == 0.1
    shares = {0.01, 0.02, 0.05}
    assert {(e.pretext, e.fraction) for e in p.secondary} == {("context", f) for f in shares | {0.5, 1.0}} | {
        ("rotation", f) for f in shares | {0.1}}
    assert {a.fraction for a in p.arms if not a.probe_only} == set(p.budgets) == shares | {0.1, 0.5, 1.0}
    assert {a.name for a in p.arms if a.probe_only or a.budget_factor != 1} == {
        "context-1-probe", "rotation-1-probe", "context-0.01-x2"}
    assert p.numerics == {"precision": "fp32", "compile": False}
    assert p.budget_rule == {"rule": "two", "tol": 0.01, "cap": {0.01: 32, 0.02: 32, 0.05: 32}}  # not 50 or 100 %
    assert p.profile in {f.stem for f in (ROOT / "conf" / "profile").glob("*.yaml")}
    # the profile holds the budgets chosen so far, so `dvc exp run -S profile=cpu -S fraction=F` trains them too
    from selfsup.loop.budget import finetune_epochs
    profile = yaml.safe_load((ROOT / "conf" / "profile" / f"{p.profile}.yaml").read_text())
    for fraction, budget in p.budgets.items():
        if budget is not None:
            assert finetune_epochs({"fraction": fraction, "finetune": profile["finetune"]}) == budget, fraction
    if (ROOT / "metrics" / "study.json").exists():  # a committed study ran under a final protocol
        assert not p.draft
    # every fine-tuned arm has at least five seeds, sized by the search where it has run there
    for a in p.arms:
        assert len(a.seeds) >= 5, a.name
    for e in p.endpoints:
        power = p.power(e)
        if power["assumed_sd"] is not None:
            assert 0.8 <= power["show_equivalence"] <= 1
    if p.budgets[0.1] is not None and p.assumed_sd[0.1] is not None:
        assert p.power(p.primary)["expected_half_width"] <= 0.01  # the study's target, at the measured spread


@pytest.mark.parametrize("change, message", [
    ({"margin": None}, "`margin` is None"),
    ({"endpoints": {"primary": {"pretext": "jigsaw", "fraction": 0.1}}}, "endpoint jigsaw at 10% has no arm"),
    ({"budgets": {0.1: 8}}, "fraction 0.01 has an arm but no entry in `budgets`"),
    ({"assumed_sd": {0.1: 0.01}}, "no `assumed_sd` entry"),
    ({"arms": [{"pretext": "context", "fractions": [0.1], "seeds": ["a"]}]}, "no list of integer seeds"),
    ({"estimate": {"pretrain_seconds": 1}}, "`estimate` must give seconds"),
    ({"capped": [0.5]}, "`capped` names fraction 0.5, which has no entry in `budgets`"),
])
def test_a_malformed_protocol_is_refused_in_one_line_naming_it(tmp_path, change, message):
    path = write_protocol(tmp_path, **change)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("`", "`")) as e:
        load_protocol(path)
    assert "\n" not in str(e.value)


def test_equivalence_is_the_90_percent_interval_inside_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.normal(rng.uniform(-0.015, 0.015), rng.uniform(0.002, 0.01), 5)
        ci = mean_ci(d, 0.90)
        inside = -0.01 < ci["ci_low"] and ci["ci_high"] < 0.01
        assert tost(d, 0.01, 0.05)["equivalent"] == inside


def test_power_matches_simulated_t_tests():
    from scipy import stats
    rng = np.random.default_rng(1)
    n, sd, effect, sims = 5, 0.0076, 0.01, 20000
    d = rng.normal(effect, sd, (sims, n))
    p = stats.ttest_1samp(d, 0, axis=1).pvalue
    assert power_paired(n, sd, effect) == pytest.approx(np.mean(p < 0.05), abs=0.015)
    zero = rng.normal(0, sd, (sims, n))
    shown = np.mean([tost(x, 0.01)["equivalent"] for x in zero[:4000]])
    assert power_equivalence(n, sd, 0.01) == pytest.approx(shown, abs=0.04)
    assert power_paired(1, sd, effect) == 0.0 and power_paired(10, sd, effect) > power_paired(5, sd, effect)


def test_the_report_tests_the_declared_endpoints_only(protocol):
    study = study_module.build_study(full_set(), protocol)
    primary, *secondary = study["endpoints"]
    assert (primary["pretext"], primary["fraction"], primary["primary"]) == ("context", 0.1, True)
    assert "p_holm" not in primary
    assert [(e["pretext"], e["fraction"]) for e in secondary] == [("context", 0.01), ("rotation", 0.1),
                                                                   ("context", 1.0)]
    assert [e["p_holm"] for e in secondary] == holm([e["difference"]["p"] for e in secondary])
    assert primary["difference"]["mean"] == pytest.approx(0.021)
    assert primary["differences"] == pytest.approx([0.02, 0.018, 0.025, 0.021])
    one = secondary[0]
    assert one["equivalence"]["equivalent"] and one["half_width"] == pytest.approx(
        (one["difference"]["ci_high"] - one["difference"]["ci_low"]) / 2)
    assert study["protocol"]["sha1"] == protocol.digest and study["missing_arms"] == []
    assert [r["pretext"] for r in study["ssl"]] == ["context", "rotation"]
    # probe and kNN at the largest share both pretexts were fine-tuned at (10 %), though context's 1 % arm has as
    # many seeds and its 100 % arm more labels; with more seeds at 1 % still at 10 %: the pretexts on the same labels
    assert [r["fraction"] for r in study["ssl"]] == [0.1, 0.1]
    more_at_1 = [a | {"seeds": list(range(9))} if a["fraction"] == 0.01 else a for a in study["arms"]]
    assert [r["fraction"] for r in study_module.ssl_rows(more_at_1, PRIMARY)] == [0.1, 0.1]
    alone = study_module.ssl_rows([a for a in more_at_1 if a["pretext"] == "context"], PRIMARY)  # no other pretext yet
    assert [(r["pretext"], r["fraction"]) for r in alone] == [("context", 0.01)]  # its arm with most seeds
    # each piece of work once: 2 pretexts' pretrainings (max over their arms), scratch once per fraction
    pretrain, scratch = 1200 + 1200, 400 + 400 + 300  # 300 s a pretraining, 100 s a fine-tune, per seed
    rest = sum((300 + 200) * n + 50 - 300 * n - 100 * n for n in (4, 4, 3, 4))  # pretrained runs and the rest
    assert study["wall_seconds"] == pytest.approx(pretrain + scratch + rest)


def test_the_plain_answers_follow_the_protocols_rules(protocol):
    study = study_module.build_study(full_set(), protocol)
    proto = study["protocol"]
    primary, low, rotation, full = study["endpoints"]
    assert verdict(primary, proto).startswith("yes: +0.0210 [")
    assert verdict(low, proto).startswith("no: +0.0003") and "equivalent to no gain within ±0.01" in verdict(low, proto)
    assert verdict(full, proto).startswith("not shown either way") and "power" in verdict(full, proto)
    # its power as planned (assumed sd 0.006) and at the spread its 3 seeds showed (sd 0.01): both said
    assert full["difference"]["std"] == pytest.approx(0.01)
    assert full["power_observed"]["detect_margin"] == pytest.approx(power_paired(3, 0.01, 0.01))
    assert full["power_observed"]["show_equivalence"] == pytest.approx(power_equivalence(3, 0.01, 0.01))
    assert verdict(full, proto).endswith(
        f"(its 3 seeds were planned for power {power_paired(3, 0.006, 0.01):.2f} to detect a gain of 0.01 at a "
        f"spread of 0.0060; at the 0.0100 they showed, {power_paired(3, 0.01, 0.01):.2f})")
    as_planned = full | {"difference": full["difference"] | {"std": 0.006}}
    assert verdict(as_planned, proto).endswith("at a spread of 0.0060)")  # no second figure where they agree
    unplanned = full | {"power": full["power"] | {"assumed_sd": None, "detect_margin": None}}
    assert verdict(unplanned, proto).endswith(f"power {power_paired(3, 0.01, 0.01):.2f} to detect a gain of 0.01 at "
                                              "the spread they showed, 0.0100)")
    readme = render_answer(study)
    assert readme.startswith("- **Does context pretraining help at 10% of the labels** (the primary endpoint)? yes")
    assert "- At 1%? no:" in readme and "- Fine-tuned from **rotation** at 10%? yes" in readme
    assert "| context at 10% **(primary)** | 4,500 | 4 |" in readme and "**What does it cost?**" in readme
    assert "linear probe test accuracy, trained on 10% of the labels (4,500 images): context" in readme
    assert "of stage time" in readme  # no run log: the stage time alone
    timed = render_answer(study | {"study_run": {"sessions": [{}, {}], "wall_seconds": 8690.7}})
    assert "the whole study 145 min of wall clock (2 invocation(s) of `python -m study run`" in timed
    doc = render(study)
    for e in study["endpoints"]:
        assert f"| {e['pretext']} at {e['fraction']:.0%} | {e['power']['seeds']} |" in doc
    assert "capped" not in readme


def test_a_capped_budget_is_said_beside_its_answer(tmp_path, monkeypatch):
    """A fraction whose budget the time limit held below its validation plateau answers at that budget, and
    both documents say so beside the answer."""
    arms = [{**PROTOCOL["arms"][0], "seeds": {**PROTOCOL["arms"][0]["seeds"], 1.0: [0]}}, PROTOCOL["arms"][1]]
    path = write_protocol(tmp_path, capped=[1.0], arms=arms)  # and one seed there: described, not tested
    monkeypatch.setattr(study_module, "protocol_file_at", lambda rev, p: path.read_bytes())
    protocol = load_protocol(path)
    assert protocol.capped == (1.0,)
    experiments = [e for e in full_set() if e["name"] != "context-1"] + [fake_experiment("context", 1.0, [0], [0.01])]
    study = study_module.build_study(experiments, protocol)
    assert study["protocol"]["capped"] == [1.0]
    caveat = "(at 32 epochs, a budget capped short of its validation plateau)"
    one_seed = "not tested (one seed, so no interval): +0.0100 macro-F1, described only"
    assert f"- At 100% {caveat}? {one_seed}." in render_answer(study)
    assert f"- context at 100% {caveat}: {one_seed}." in render(study)
    assert "- At 1%? no:" in render_answer(study)
    assert "| context at 100% | 1 | 0.0060 | n/a | 0.00 | 0.00 |" in power_table(protocol)


@pytest.mark.parametrize("exp, message", [
    (fake_experiment("context", 0.1, [0, 1, 2, 3], [0] * 4, profile="full"), "ran profile 'full'"),
    (fake_experiment("context", 0.1, [0, 1, 2], [0] * 3), "ran seeds [0, 1, 2]"),
    (fake_experiment("context", 0.1, [0, 1, 2, 3], [0] * 4, budget=16), "fine-tuned 16 epochs at 0.1"),
    (fake_experiment("jigsaw", 0.1, [0, 1, 2, 3], [0] * 4), "is no arm of"),
])
def test_runs_that_differ_from_the_protocol_are_refused_by_name(protocol, exp, message):
    others = [e for e in full_set() if (e["params"]["pretext"]["task"], e["params"]["fraction"]) != ("context", 0.1)]
    if exp["params"]["pretext"]["task"] == "jigsaw":
        others = full_set()
    exp["params"]["pretext"] = {"task": exp["params"]["pretext"]["task"], "epochs": 10,
                                exp["params"]["pretext"]["task"]: {"a": 1}}
    exp["finished"] = 2
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        study_module.build_study([*others, exp], protocol)
    assert "\n" not in str(e.value)


def test_a_missing_arm_is_refused_unless_partial(protocol):
    some = full_set()[:2]
    with pytest.raises(UserError, match="arms context-1, rotation-0.1 have no record"):
        study_module.build_study(some, protocol)
    study = study_module.build_study(some, protocol, partial=True)
    assert study["missing_arms"] == ["context-1", "rotation-0.1"]
    assert [e["run"] for e in study["endpoints"]] == [True, True, False, False]
    assert "| rotation at 10% | | 4 | not run |" in render_answer(study)


def test_runs_under_another_protocol_are_refused(protocol, monkeypatch):
    monkeypatch.setattr(study_module, "protocol_file_at", lambda rev, p: b"question: another\n")
    with pytest.raises(UserError, match="ran at commit aaaaaaa, whose .*protocol.yaml differs from"):
        study_module.build_study(full_set(), protocol)


def test_the_study_runs_the_primary_first_and_estimates_each_piece_of_work_once(protocol):
    arms = ordered(protocol)
    assert [a.name for a in arms] == ["context-0.1", "context-0.01", "context-1", "rotation-0.1"]  # as declared
    rate = protocol.estimate
    # nothing done: 4 context + 4 rotation pretrainings; scratch at 0.1 (4 x 8), 0.01 (4 x 4), 1.0 (3 x 32)
    # epochs once; pretrained runs per arm; an arm's other stages 4 x 100 s
    scratch_epochs = 4 * 8 + 4 * 4 + 3 * 32
    pretrained_epochs = 4 * 8 + 4 * 4 + 4 * 8 + 3 * 32
    expected = 8 * 300 + (scratch_epochs + pretrained_epochs) * 20 + 4 * 100
    assert remaining_seconds(protocol, arms, [], rate) == pytest.approx(expected)
    # context at 10 % done: its pretrainings and 10 % scratch runs are not counted again
    left = remaining_seconds(protocol, arms[1:], arms[:1], rate)
    assert left == pytest.approx(expected - 4 * 300 - 2 * 4 * 8 * 20 - 100)
    measured, source = rates(protocol, {"context-0.1": full_set()[0]})
    assert measured == {"pretrain_seconds": 300.0, "finetune_epoch_seconds": 100.0 / 8,
                        "arm_other_seconds": 4 * 500 + 50 - 1200 - 800} and "measured" in source
    assert math.isclose(rates(protocol, {})[0]["pretrain_seconds"], 300)


@pytest.mark.parametrize("outcome", ["interrupted", "failed"])
def test_the_study_logs_its_wall_clock_however_an_invocation_ends(protocol, tmp_path, monkeypatch, outcome):
    """Ctrl-C or a failed arm: the invocation's seconds still go into metrics/study_run.json, so the study's
    wall clock over its interruptions is on record."""
    from study import run as run_study
    log = tmp_path / "study_run.json"
    monkeypatch.setattr(run_study, "RUN_LOG", log)
    monkeypatch.setattr(run_study, "done_arms", lambda p: {})
    monkeypatch.setattr(run_study, "done_parts", lambda p, a: {})  # nor in parts (the repository's are another study's)

    def arm(cmd):
        if outcome == "interrupted":
            raise KeyboardInterrupt
        return 1
    monkeypatch.setattr(run_study, "run_child", arm)
    monkeypatch.setattr(run_study, "current_branch", lambda: "main")
    monkeypatch.setattr(run_study, "reattach", lambda branch: None)
    calls = []

    def git(*args):  # the log's commit fails (as outside a repository): the run's own end still stands
        calls.append(args)
        raise UserError("git commit failed: not a repository")
    monkeypatch.setattr(run_study, "git", git)
    with pytest.raises(KeyboardInterrupt if outcome == "interrupted" else UserError, match=None if outcome ==
                       "interrupted" else "^(?!git)"):
        run_study.main(["--protocol", str(protocol.path)])
    sessions = json.loads(log.read_text())["sessions"]
    assert len(sessions) == 1 and sessions[0]["arms_run"] == [] and sessions[0]["seconds"] >= 0
    assert calls == [("add", "-f", log.as_posix())]  # committed as its own file (the add failed here)


def test_the_plan_runs_and_writes_nothing(protocol, tmp_path, monkeypatch, capsys):
    from study import run as run_study
    log = tmp_path / "study_run.json"
    monkeypatch.setattr(run_study, "RUN_LOG", log)
    monkeypatch.setattr(run_study, "done_arms", lambda p: {})
    monkeypatch.setattr(run_study, "done_parts", lambda p, a: {})  # nor in parts (the repository's are another study's)
    monkeypatch.setattr(run_study.subprocess, "run", lambda *a, **k: pytest.fail("the plan ran something"))
    monkeypatch.setattr(run_study.subprocess, "Popen", lambda *a, **k: pytest.fail("the plan ran something"))
    run_study.main(["--protocol", str(protocol.path), "--plan"])
    assert not log.exists() and "| all |" in capsys.readouterr().out


def test_protocol_module_names_its_file():
    assert protocol_module.PROTOCOL == Path("protocol.yaml")


def test_the_primary_is_replicated_in_fp32_beside_the_study(protocol):
    study = study_module.build_study(full_set(), protocol)
    assert study["fp32_replicate"] == {"status": "not run"}
    assert "- **Numerics.** The fp32 replicate of the primary has not run." in render_answer(study)
    close = fake_experiment("context", 0.1, [0, 1, 2, 3], [0.021, 0.019, 0.024, 0.02], name="context-0.1-fp32",
                            precision="fp32", finished=5)
    study = study_module.build_study([*full_set(), close], protocol)
    rep = study["fp32_replicate"]
    assert rep["agree"] and rep["experiment"] == "context-0.1-fp32" and rep["precision"] == "bf16"
    assert study["endpoints"][0]["difference"]["mean"] == pytest.approx(0.021)  # the replicate is no arm's run
    assert "agrees with the bf16 study's; the answer does not hang on the numerics" in render_answer(study)
    far = fake_experiment("context", 0.1, [0, 1, 2, 3], [-0.01, -0.012, -0.008, -0.01], name="context-0.1-fp32",
                          precision="fp32", finished=6)
    assert not study_module.build_study([*full_set(), far], protocol)["fp32_replicate"]["agree"]
    wrong = fake_experiment("context", 0.1, [0, 1, 2, 3], [0.0] * 4, name="context-0.1-fp32", finished=7)
    with pytest.raises(UserError, match="should be the fp32 replicate but ran in bf16"):
        study_module.build_study([*full_set(), wrong], protocol)
    fp32 = [fake_experiment(e["params"]["pretext"]["task"], e["params"]["fraction"], e["params"]["seeds"],
                            [0.0] * len(e["params"]["seeds"]), precision="fp32") for e in full_set()]
    own = study_module.build_study(fp32, protocol)["fp32_replicate"]
    assert own == {"status": "the study ran in fp32"}


def test_a_draft_protocol_runs_and_answers_nothing(tmp_path, monkeypatch):
    path = write_protocol(tmp_path, draft="budgets at 50 % and 100 % not chosen yet")
    draft = load_protocol(path)
    monkeypatch.setattr(study_module, "protocol_file_at", lambda rev, p: path.read_bytes())
    with pytest.raises(UserError, match=r"is a draft \(budgets at 50 % and 100 % not chosen yet\)"):
        study_module.build_study(full_set(), draft)
    from study.protocol import describe
    assert describe(draft).endswith("; DRAFT: budgets at 50 % and 100 % not chosen yet")


def test_the_protocol_doc_shows_the_committed_protocols_power():
    from study.markdown import readme_section
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = readme_section(doc, "<!-- power:begin (python -m study plan) -->", "<!-- power:end -->")
    assert section == power_table(load_protocol(ROOT / "protocol.yaml")) + "\n", \
        "docs/protocol.md's power table differs from protocol.yaml: paste `python -m study plan`'s"


def test_the_report_draws_every_pretext_beside_scratch(protocol, tmp_path):
    from study.report import draw_figures
    study = study_module.build_study(full_set(), protocol)
    paths = {"label_efficiency": tmp_path / "le.png", "curves": tmp_path / "curves.png"}
    draw_figures(study, protocol, paths)
    assert all(p.stat().st_size > 5000 for p in paths.values())


def test_each_pretext_may_compile_its_own_network_but_fine_tunes_share_one_record(protocol):
    def compiled(exp: dict, kind: str) -> dict:
        exp["compare"]["numerics"][kind] = [r | {"compile": True} for r in exp["compare"]["numerics"][kind]]
        return exp
    exps = full_set()
    compiled(exps[3], "pretrain")  # rotation's pretraining compiled, context's not: two networks, two verdicts
    study = study_module.build_study(exps, protocol)
    assert study["numerics"]["pretrain"]["rotation"]["compile"] and not study["numerics"]["pretrain"]["context"]["compile"]
    exps = full_set()
    compiled(exps[1], "pretrain")  # one context arm compiled, the others not: refused
    with pytest.raises(UserError, match="experiment context-0.01 has pretrain runs whose numerics differ"):
        study_module.build_study(exps, protocol)
    exps = full_set()
    compiled(exps[3], "finetune")  # the same classifier in every arm: one record
    with pytest.raises(UserError, match="has finetune runs whose numerics differ"):
        study_module.build_study(exps, protocol)


def test_arms_from_other_machines_pool_but_not_other_numerics(protocol):
    exps = full_set()
    for kind in ("finetune", "pretrain"):  # rotation's arm ran on another CPU: pooled, each arm names its machine
        exps[3]["compare"]["numerics"][kind] = [r | {"device": "cpu: Intel Xeon, 2 threads"}
                                                for r in exps[3]["compare"]["numerics"][kind]]
    study = study_module.build_study(exps, protocol)
    assert "device" not in study["numerics"]["finetune"] and study["numerics"]["finetune"]["precision"] == "bf16"
    exps[3]["compare"]["numerics"]["finetune"][0]["precision"] = "fp32"
    with pytest.raises(UserError, match="has finetune runs whose numerics differ .*precision"):
        study_module.build_study(exps, protocol)
