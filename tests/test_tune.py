"""Tuning picks each init's setting on validation only, over the same trials for both inits."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from selfsup.core.params import UserError
from study.markdown import readme_section, splice
from study import tune
from study.tune import BEGIN, END, TUNING_JSON, build, render

ROOT = Path(__file__).resolve().parents[1]


def experiment(name: str, lr: float, val: dict[str, list[float]], test: dict[str, list[float]],
               fraction: float = 0.1) -> dict:
    runs = {init: [{"final_val_f1_macro": v, "test_f1_macro": t} for v, t in zip(val[init], test[init])]
            for init in ("scratch", "pretrained")}
    return {"name": name, "params": {"fraction": fraction, "seeds": [0, 1], "device": "cpu",
                                     "finetune": {"lr": lr, "epochs": 6}}, "compare": {"runs": runs}}


def test_the_tune_command_help_leaves_the_sweep_file(tmp_path, monkeypatch, capsys):
    # `-h` exits; the runner that removes a failed command's outputs took that exit for a failure
    monkeypatch.chdir(tmp_path)
    TUNING_JSON.parent.mkdir()
    TUNING_JSON.write_text("{}")
    monkeypatch.setattr(sys, "argv", ["python -m study tune", "-h"])
    with pytest.raises(SystemExit) as exited:
        tune.cli()
    assert exited.value.code == 0 and "--earlier" in capsys.readouterr().out
    assert TUNING_JSON.read_text() == "{}"


def test_each_init_gets_its_best_validation_setting_and_test_is_never_used():
    sweep = [
        # the best test scores sit where validation is worst: selecting on them would pick lr-0.05
        experiment("lr-0.05", 0.05, {"scratch": [0.60, 0.62], "pretrained": [0.64, 0.66]},
                   {"scratch": [0.99, 0.99], "pretrained": [0.99, 0.99]}),
        experiment("lr-0.1", 0.1, {"scratch": [0.70, 0.72], "pretrained": [0.68, 0.70]},
                   {"scratch": [0.10, 0.10], "pretrained": [0.10, 0.10]}),
        experiment("lr-0.2", 0.2, {"scratch": [0.69, 0.71], "pretrained": [0.72, 0.74]},
                   {"scratch": [0.10, 0.10], "pretrained": [0.10, 0.10]}),
    ]
    tuning = build(sweep)
    assert tuning["varied"] == ["lr"] and tuning["trials_per_init"] == {"scratch": 3, "pretrained": 3}
    assert tuning["chosen"] == {"scratch": "lr-0.1", "pretrained": "lr-0.2"} and not tuning["same_choice"]
    assert tuning["trials"][1]["validation"]["scratch"] == pytest.approx(0.71)
    table = render(tuning)
    assert "| lr-0.1 | 0.1 | **0.7100** ± 0.0141 | 0.6900 ± 0.0141 |" in table
    assert "| lr-0.2 | 0.2 | 0.7000 ± 0.0141 | **0.7300** ± 0.0141 |" in table
    assert "0.99" not in table and "prefer different settings" in table


def test_a_sweep_varies_the_recipe_only():
    a = experiment("a", 0.1, {"scratch": [0.7], "pretrained": [0.7]}, {"scratch": [0.7], "pretrained": [0.7]})
    b = experiment("b", 0.2, {"scratch": [0.7], "pretrained": [0.7]}, {"scratch": [0.7], "pretrained": [0.7]},
                   fraction=0.5)
    with pytest.raises(UserError, match="differ in fraction"):
        build([a, b])
    with pytest.raises(UserError, match="two or more"):
        build([a])


def test_an_earlier_sweep_is_extended_by_new_trials_of_the_same_recipe():
    old = build([
        experiment("lr-0.1", 0.1, {"scratch": [0.70, 0.72], "pretrained": [0.68, 0.70]}, {"scratch": [0.1, 0.1],
                   "pretrained": [0.1, 0.1]}),
        experiment("lr-0.2", 0.2, {"scratch": [0.69, 0.71], "pretrained": [0.72, 0.74]}, {"scratch": [0.1, 0.1],
                   "pretrained": [0.1, 0.1]}),
    ])
    old = json.loads(json.dumps(old))  # as read back from metrics/tuning.json
    for t in old["trials"]:
        del t["recipe"]  # a file written before trials carried their recipe is taken as it is
    # one new trial at the top of the grid, and a repeat of lr 0.2: the new run replaces the earlier one
    new = [experiment("lr-0.4", 0.4, {"scratch": [0.74, 0.76], "pretrained": [0.70, 0.70]},
                      {"scratch": [0.1, 0.1], "pretrained": [0.1, 0.1]}),
           experiment("lr-0.2b", 0.2, {"scratch": [0.69, 0.71], "pretrained": [0.72, 0.74]},
                      {"scratch": [0.1, 0.1], "pretrained": [0.1, 0.1]})]
    tuning = build(new, old)
    assert [t["experiment"] for t in tuning["trials"]] == ["lr-0.1", "lr-0.2b", "lr-0.4"]
    assert tuning["trials_per_init"] == {"scratch": 3, "pretrained": 3}
    assert tuning["chosen"] == {"scratch": "lr-0.4", "pretrained": "lr-0.2b"}
    table = render(tuning)
    assert "| lr-0.1 (earlier) | 0.1 | 0.7100 ± 0.0141 |" in table and "| lr-0.4 | 0.4 | **0.7500**" in table
    assert "from an earlier sweep" in table
    assert build(new[:1], old)["varied"] == ["lr"]  # one new experiment extends the sweep's keys
    # the earlier sweep must be the same study: fraction, seeds, the rest of the recipe
    with pytest.raises(UserError, match="fraction 0.1, the new experiments ran at 0.5"):
        build([experiment("x", 0.4, {"scratch": [0.7, 0.7], "pretrained": [0.7, 0.7]},
                          {"scratch": [0.7, 0.7], "pretrained": [0.7, 0.7]}, fraction=0.5)], old)
    with pytest.raises(UserError, match="different numbers of seeds"):
        build([experiment("x", 0.4, {"scratch": [0.7], "pretrained": [0.7]},
                          {"scratch": [0.7], "pretrained": [0.7]})], old)
    longer = build(new, None)
    longer["trials"][0]["recipe"]["epochs"] = 12
    with pytest.raises(UserError, match="differs from the new ones in finetune.epochs"):
        build(new[1:], json.loads(json.dumps(longer)))


def test_a_schedule_sweep_extends_an_earlier_learning_rate_sweep():
    def trial(name, lr, warmup, val, by_fraction=()):
        exp = experiment(name, lr, {"scratch": val, "pretrained": val}, {"scratch": [0.9, 0.9], "pretrained": [0.9, 0.9]})
        exp["params"]["finetune"] |= {"warmup_epochs": warmup, "epochs_by_fraction": [list(p) for p in by_fraction]}
        return exp
    old = json.loads(json.dumps(build([trial("lr-0.1", 0.1, 0.2, [0.70, 0.70]), trial("lr-0.4", 0.4, 0.2, [0.72, 0.72])])))
    del old["trials"][0]["recipe"]  # written before trials carried their recipe: it shares lr-0.4's
    # the baseline repeated, now with a budget for other fractions (not this one's), and a longer warm-up
    new = [trial("base", 0.4, 0.2, [0.72, 0.72], by_fraction=[(0.5, 16)]), trial("wu-1", 0.4, 1.0, [0.73, 0.73])]
    tuning = build(new, old)
    assert tuning["varied"] == ["lr", "warmup_epochs"]
    assert [(t["experiment"], t["setting"]) for t in tuning["trials"]] == [
        ("lr-0.1", {"lr": 0.1, "warmup_epochs": 0.2}), ("base", {"lr": 0.4, "warmup_epochs": 0.2}),
        ("wu-1", {"lr": 0.4, "warmup_epochs": 1.0})]
    assert tuning["chosen"] == {"scratch": "wu-1", "pretrained": "wu-1"}
    assert "| lr-0.1 (earlier) | 0.1 | 0.2 | 0.7000 ± 0.0000 |" in render(tuning)
    del old["trials"][1]["recipe"]  # nothing records the earlier warm-up: refused by name
    with pytest.raises(UserError, match="trial lr-0.1 does not record one finetune.warmup_epochs"):
        build(new, old)


def test_the_committed_tuning_table_is_what_metrics_tuning_json_holds():
    tuning = json.loads((ROOT / TUNING_JSON).read_text())
    assert readme_section((ROOT / "docs" / "results.md").read_text(), BEGIN, END) == render(tuning), \
        "docs/results.md's tuning table differs from metrics/tuning.json: run `python -m study tune`"
    assert tuning["trials_per_init"]["scratch"] == tuning["trials_per_init"]["pretrained"] >= 2


def test_a_document_without_the_markers_is_refused_by_name(tmp_path):
    with pytest.raises(UserError, match=r"results\.md lacks the markers <!-- tuning:begin"):
        splice("no markers here\n", "table\n", BEGIN, END, tmp_path / "results.md")


class TestSetLocked:
    """A dataset whose test images and labels raise when read: what a tuning or sizing tool may not touch."""

    def __init__(self, dataset):
        self._dataset = dataset

    def __getattr__(self, name):
        if name.startswith("test_"):
            raise AssertionError(f"a tuning tool read {name}")
        return getattr(self._dataset, name)


@pytest.mark.e2e
def test_sizing_and_precision_tools_never_read_the_test_set(tmp_path, monkeypatch):
    """study.budgets (budgets) and tools.precision_check choose things, so they run to the end with the
    test set locked away; study.tune reads validation only (the test above)."""
    import sys

    from selfsup.core.dataset import load_dataset
    from tests.synthetic import stage_workspace
    from tools import precision_check
    from study import budgets as size_finetune

    ws = stage_workspace(tmp_path, pretext={}, finetune={"epochs": 1})
    monkeypatch.chdir(ws)

    def locked(path):
        dataset, meta = load_dataset(path)
        return TestSetLocked(dataset), meta
    monkeypatch.setattr(size_finetune, "load_dataset", locked)
    monkeypatch.setattr(precision_check, "load_dataset", locked)
    out = tmp_path / "budgets.json"
    monkeypatch.setattr(sys, "argv", ["size_finetune", "--fractions", "0.5", "--start", "1", "--max", "2",
                                      "--seeds", "0", "1", "2", "--out", str(out)])
    size_finetune.main()
    result = json.loads(out.read_text())
    assert sorted((r["seed"], r["epochs"]) for r in result["runs"]) == [(s, e) for s in (0, 1, 2) for e in (1, 2)]
    assert all(0 <= r["val_f1_macro"] <= 1 and r["validation"] > 0 for r in result["runs"])
    # stopped and started again: every finished run is reused, none re-run
    monkeypatch.setattr(size_finetune, "fine_tune", lambda *a: pytest.fail("a finished run ran again"))
    size_finetune.main()
    monkeypatch.setattr(sys, "argv", ["precision_check", "--fraction", "0.5", "--epochs", "1", "--precisions", "fp32"])
    precision_check.main()


def test_a_budget_is_the_smallest_whose_doubling_no_init_gains_from():
    from study.budgets import choose, table

    def runs(init: str, means: dict[int, float]) -> list[dict]:
        return [{"fraction": 0.1, "init": init, "seed": s, "epochs": e, "val_f1_macro": m + d, "labelled": 4500}
                for e, m in means.items() for s, d in zip((0, 1, 2), (-0.01, 0.0, 0.01))]
    scratch = runs("scratch", {2: 0.60, 4: 0.65, 8: 0.652, 16: 0.653})
    assert choose(scratch, 0.1, ["scratch"], [0, 1, 2], 0.005) == 4
    pretrained = runs("pretrained", {2: 0.62, 4: 0.64, 8: 0.66, 16: 0.662})  # still gains at 4 -> 8
    assert choose(scratch + pretrained, 0.1, ["scratch", "pretrained"], [0, 1, 2], 0.005) == 8
    assert choose(scratch[:-3], 0.1, ["scratch"], [0, 1, 2, 3], 0.005) is None  # seed 3 has not run: no choice
    text = table({"runs": scratch, "seeds": [0, 1, 2], "inits": ["scratch"], "chosen": {"0.1": 4}})
    assert "| 0.1 | 4,500 | **4** | 0.6500 (+0.0500) |" in text and "| 0.1 | 4,500 | 2 | 0.6000 |" in text
    assert text.endswith("Chosen (bold): 4 epochs at 10%.")
    both = table({"runs": scratch + pretrained, "seeds": [0, 1, 2], "inits": ["scratch", "pretrained"],
                  "chosen": {"0.1": 8}})
    assert "| 0.1 | 4,500 | **8** | 0.6520 (+0.0020) | 0.6600 (+0.0200) | +0.0080 ± 0.0000 |" in both


def test_a_doubling_too_noisy_to_tell_does_not_stop_the_search():
    """The bound rule stops only where the doubling's gain is shown below the tolerance: seed-to-seed gains of
    +0.020, -0.015, +0.001 (mean +0.002) stop the mean rule at 2 epochs, not the bound rule; consistent small
    gains at 4 -> 8 stop both."""
    from study.budgets import choose

    f1 = {2: (0.40, 0.42, 0.41), 4: (0.42, 0.405, 0.411), 8: (0.422, 0.407, 0.412)}
    runs = [{"fraction": 0.01, "init": "scratch", "seed": s, "epochs": e, "val_f1_macro": v, "labelled": 450}
            for e, values in f1.items() for s, v in enumerate(values)]
    assert choose(runs, 0.01, ["scratch"], [0, 1, 2], 0.005, rule="mean") == 2
    assert choose(runs, 0.01, ["scratch"], [0, 1, 2], 0.005) == 4  # +0.002, +0.002, +0.001: bound 0.0026
    assert choose(runs[:6], 0.01, ["scratch"], [0, 1, 2], 0.005) is None  # 4 -> 8 not run yet: keep doubling


def test_the_two_doublings_rule_takes_the_budget_between_two_small_gains():
    """Rule two: a budget is taken when the doublings into it and out of it both gain less than the tolerance
    on average, for every init; one small gain followed by a large one does not stop it, and the budget taken
    is the middle one (the runs at twice it are what confirms it)."""
    from study.budgets import choose

    def runs(init: str, means: dict[int, float]) -> list[dict]:
        return [{"fraction": 0.1, "init": init, "seed": s, "epochs": e, "val_f1_macro": m + d, "labelled": 4500}
                for e, m in means.items() for s, d in zip((0, 1, 2), (-0.01, 0.0, 0.01))]
    scratch = runs("scratch", {4: 0.60, 8: 0.603, 16: 0.62, 32: 0.623, 64: 0.624})
    assert choose(scratch, 0.1, ["scratch"], [0, 1, 2], 0.005, rule="mean") == 4  # 4 -> 8 gains 0.003: stops
    assert choose(scratch, 0.1, ["scratch"], [0, 1, 2], 0.005, rule="two") == 32  # 8 -> 16 gained 0.017
    assert choose(scratch[:-3], 0.1, ["scratch"], [0, 1, 2], 0.005, rule="two") is None  # 32 -> 64 not run yet
    pretrained = runs("pretrained", {16: 0.63, 32: 0.64, 64: 0.641, 128: 0.642})  # gains into 32: 0.01
    both = scratch + pretrained
    assert choose(both, 0.1, ["scratch", "pretrained"], [0, 1, 2], 0.005, rule="two") is None
    scratch_128 = runs("scratch", {128: 0.6245})
    assert choose(both + scratch_128, 0.1, ["scratch", "pretrained"], [0, 1, 2], 0.005, rule="two") == 64


def test_paired_runs_at_a_chosen_budget_keep_the_choice(tmp_path, monkeypatch):
    """Pretrained runs added at the chosen budget (to measure the paired gain's spread) reuse the scratch runs,
    keep the earlier choice, and a fraction that never stopped doubling names the largest budget it ran."""
    import sys

    from study import budgets as size_finetune
    params = {"profile_name": "cpu", "model": {"arch": "a"}, "finetune": {"lr": 0.4}, "split": {"val_fraction": 0.1},
              "pretext": {"task": "context"}}
    score = {("scratch", 1): 0.60, ("scratch", 2): 0.65, ("scratch", 4): 0.652, ("pretrained", 2): 0.66}
    calls = []

    def fine_tune(params, dataset, meta, fraction, seed, epochs, init, pretrained):
        calls.append((fraction, init, seed, epochs))
        f1 = score.get((init, epochs), 0.5 + 0.01 * epochs) + 0.001 * seed
        return {"val_f1_macro": f1, "labelled": 450, "validation": 5000, "seconds": 1.0, "precision": "fp32",
                "machine": size_finetune.cpu_id()}
    monkeypatch.setattr(size_finetune, "load_params", lambda: params)
    monkeypatch.setattr(size_finetune, "load_dataset", lambda path: (None, {}))
    monkeypatch.setattr(size_finetune, "fine_tune", fine_tune)
    out = tmp_path / "budgets.json"

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["size_finetune", *args, "--rule", "bound", "--out", str(out)])
        size_finetune.main()
        return json.loads(out.read_text())
    assert run("--fractions", "0.01", "--start", "1")["chosen"] == {"0.01": 2}
    calls.clear()
    models = tmp_path / "pretrained"
    models.mkdir()
    for s in (0, 1, 2):
        (models / f"seed{s}.pt").write_bytes(b"extractor %d" % s)
    paired = ("--fractions", "0.01", "--start", "2", "--max", "2", "--init", "scratch", "pretrained",
              "--pretrained", str(models))
    result = run(*paired)
    assert calls == [(0.01, "pretrained", s, 2) for s in (0, 1, 2)]  # the scratch runs at 2 are reused
    assert result["chosen"] == {"0.01": 2}
    text = size_finetune.table(result)
    assert "| 0.01 | 450 | **2** | 0.6510 (+0.0500) | 0.6610 | +0.0100 ± 0.0000 |" in text
    calls.clear()
    assert run(*paired)["runs"] == result["runs"] and calls == []  # the same extractors: nothing runs again
    (models / "seed1.pt").write_bytes(b"another pretraining")  # another design: its pretrained run is another run
    again = run(*paired)
    assert calls == [(0.01, "pretrained", 1, 2)] and len(again["superseded"]) == 1
    assert again["superseded"][0]["extractor"] == result["runs"][-2]["extractor"]
    result = run("--fractions", "0.5", "--start", "8", "--max", "16")  # 0.5 + 0.01 e: every doubling gains
    assert result["chosen"] == {"0.01": 2, "0.5": None}
    assert size_finetune.table(result).endswith("Chosen (bold): 2 epochs at 1%; still doubling: 50% (ran to 16).")
    # a cap: the share runs to it and, the rule having chosen nothing below it, takes it, capped; a cap below a
    # budget the file had run stops there too, and a rerun runs nothing
    calls.clear()
    capped = run("--fractions", "0.5", "--start", "8", "--cap", "16")
    assert calls == [] and capped["chosen"] == {"0.01": 2, "0.5": 16} and capped["capped"] == {"0.5": 16}
    assert size_finetune.table(capped).endswith(
        "Chosen (bold): 2 epochs at 1%, 16 epochs at 50% (capped: the rule chose nothing below it).")
    assert "| 0.5 | 22,500 | **16** |" in size_finetune.table({**capped, "runs": [
        {**r, "labelled": 22500} if r["fraction"] == 0.5 else r for r in capped["runs"]]})
    assert run("--fractions", "0.5", "--start", "8", "--cap", "8")["chosen"]["0.5"] == 8 and calls == []


def test_a_gain_that_rounds_to_the_tolerance_shows_which_side_it_falls():
    from study.budgets import gain_text
    assert gain_text(0.010040593852618362, 0.01) == "+0.01004"  # not under 0.01: the doubling is not worthless
    assert gain_text(0.00996, 0.01) == "+0.00996" and gain_text(-0.01003, 0.01) == "-0.01003"
    assert gain_text(0.0114, 0.01) == "+0.0114" and gain_text(0.01004, None) == "+0.0100"


@pytest.mark.parametrize("name,marker", [("budgets.json", "budgets"), ("budgets-next.json", "budgets-next")])
def test_the_committed_budget_table_is_what_its_file_holds(name, marker):
    from study.budgets import declared, table
    path = ROOT / "metrics" / name
    if not path.exists():
        pytest.skip(f"no metrics/{name} committed")
    section = readme_section((ROOT / "docs" / "results.md").read_text(),
                             f"<!-- {marker}:begin (python -m study budgets --table --out metrics/{name}) -->",
                             f"<!-- {marker}:end -->")
    terms = declared(Path("metrics") / name, ROOT / "protocol.yaml")  # as `--table --out metrics/<name>` reads them
    assert section == table(json.loads(path.read_text()), terms["margin"], terms["primary"]) + "\n", \
        f"run python -m study budgets --table --out {path}"


def test_the_search_takes_the_protocols_margin_primary_and_tolerance_for_its_own_file(tmp_path):
    from study.budgets import MARGIN, PRIMARY, declared, table
    protocol = tmp_path / "protocol.yaml"
    assert declared(Path("s.json"), protocol) == {"margin": MARGIN, "primary": PRIMARY, "tol": MARGIN}  # none
    protocol.write_text("margin: 0.02\nbudget_source: s.json\nbudget_rule: {rule: two, tol: 0.005}\n"
                        "endpoints: {primary: {pretext: context, fraction: 0.5}}\n")
    assert declared(Path("s.json"), protocol) == {"margin": 0.02, "primary": 0.5, "tol": 0.005}
    assert declared(Path("other.json"), protocol)["margin"] == MARGIN  # another file: not the protocol's search
    runs = [{"fraction": f, "init": i, "seed": s, "epochs": 4, "labelled": 10, "val_f1_macro": 0.5 + d * (i == "pretrained")}
            for f in (0.1, 0.5) for i in ("scratch", "pretrained") for s, d in enumerate((0.0, 0.01, 0.02))]
    result = {"runs": runs, "seeds": [0, 1, 2], "chosen": {"0.1": 4, "0.5": 4}}
    assert "within ±0.02, and at 50 % an expected half-width of at most 0.02" in table(result, 0.02, 0.5)
    assert "within ±0.01, and at 10 % an expected half-width of at most 0.01" in table(result)


@pytest.mark.e2e
def test_the_budget_tool_runs_the_fine_tune_the_stage_runs(tmp_path, monkeypatch):
    """Budgets are chosen on the runs the study makes: study.budgets and `finetune@scratch` (the stage, in
    its own process) give the same validation macro-F1 for the same fraction, seed, init and budget."""
    import subprocess
    import sys

    from selfsup.core.dataset import load_dataset
    from tests.synthetic import read_params, stage_workspace
    from study import budgets as size_finetune

    ws = stage_workspace(tmp_path, pretext={}, finetune={"epochs": 2})
    proc = subprocess.run([sys.executable, "-m", "stages.finetune", "--init", "scratch", "--seed", "0"], cwd=ws,
                          env={**os.environ, "PYTHONPATH": str(ws)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stage = json.loads((ws / "metrics" / "runs" / "finetune" / "scratch" / "seed0" / "metrics.json").read_text())
    monkeypatch.chdir(ws)
    params = read_params(ws)
    dataset, meta = load_dataset(ws / "data" / "dataset")
    tool = size_finetune.fine_tune(params, dataset, meta, params["fraction"], 0, 2, "scratch", ws / "models")
    assert stage["final"]["epoch"] == 2 and tool["labelled"] == stage["final"]["labelled_size"]
    assert tool["val_f1_macro"] == pytest.approx(stage["final"]["val"]["f1_macro"], abs=1e-9)
    assert tool["val_loss"] == pytest.approx(stage["final"]["val"]["loss"], rel=1e-6)
