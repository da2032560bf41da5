"""The wiring pretrain and finetune share: a section's recipe, and the per-epoch log that resumes."""

from __future__ import annotations

import csv
import json
import time

import pytest
import torch
from torch import nn

from selfsup.training.distributed import Dist
from selfsup.core.params import UserError
from selfsup.loop.training_stage import EpochLog, Recipe, TrainingStage

SECTION = {"epochs": 3, "batch_size": 32, "lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 0.5,
           "eval_batch_size": 64}


def test_recipe_reads_one_section_and_names_a_missing_key():
    # types and ranges are checked once, at the stage's start (selfsup/config.py); the recipe only reads
    recipe = Recipe.read({"pretext": dict(SECTION)}, "pretext")
    assert recipe == Recipe(3, 32, 0.1, 5e-4, 0.5, 64)
    with pytest.raises(UserError, match="param 'pretext.eval_batch_size' is missing"):
        Recipe.read({"pretext": {k: v for k, v in SECTION.items() if k != "eval_batch_size"}}, "pretext")


def stage() -> TrainingStage:
    return TrainingStage({"compile": False}, Dist(), torch.device("cpu"), "fp32", time.perf_counter())


def logged_steps(live_dir, name: str) -> list[tuple[int, float]]:
    with open(live_dir / "plots" / "metrics" / f"{name}.tsv") as f:
        return [(int(r["step"]), float(r[name])) for r in csv.DictReader(f, delimiter="\t")]


def run_epochs(live_dir, stop_after: int | None, initial: bool) -> EpochLog:
    recipe = Recipe(3, 4, 0.1, 0.0, 0.0, 4)
    net = nn.Linear(2, 2)
    trainer = recipe.trainer(net, 1, stage())
    log = EpochLog("unit", live_dir, "fingerprint", stage(), recipe.epochs)
    log.open(trainer, None, initial=(lambda: {"score": -1.0}) if initial else None)
    for epoch in log.epochs():
        with log.timed("train"):
            time.sleep(0.05)
        log.log({"score": float(epoch)})
        log.end_epoch(epoch, trainer, None)
        if epoch == stop_after:
            return log  # an interruption: the checkpoint of this epoch stays
    log.close({"done": True})
    log.finish()
    return log


@pytest.mark.parametrize("initial", [True, False])
def test_epoch_log_steps_and_a_resumed_run_continue_where_it_stopped(tmp_path, monkeypatch, initial):
    monkeypatch.chdir(tmp_path)
    live = tmp_path / "live"
    run_epochs(live, stop_after=2, initial=initial)
    assert (tmp_path / ".resume" / "unit.pt").exists()
    resumed = run_epochs(live, stop_after=None, initial=initial)
    assert resumed.first_epoch == 3 and not (tmp_path / ".resume" / "unit.pt").exists()
    # step 0 is the untrained network where there is one; every epoch is logged once, in order
    expected = [(0, -1.0), (1, 1.0), (2, 2.0), (3, 3.0)] if initial else [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert logged_steps(live, "score") == expected
    assert (live / "metrics.json").read_text().count('"done": true') == 1


def test_a_fine_tune_recipe_takes_its_fractions_budget():
    section = {**SECTION, "epochs_by_fraction": [[0.5, 16]]}
    assert Recipe.read({"fraction": 0.5, "finetune": section}, "finetune").epochs == 16
    assert Recipe.read({"fraction": 0.1, "finetune": section}, "finetune").epochs == 3
    assert Recipe.read({"fraction": 0.5, "pretext": section}, "pretext").epochs == 3  # a pretraining: its own


def test_the_summary_says_where_the_time_went_across_a_resumption(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    live = tmp_path / "live"
    run_epochs(live, stop_after=2, initial=False)
    run_epochs(live, stop_after=None, initial=False)
    spent = json.loads((live / "metrics.json").read_text())["time"]
    assert spent["seconds"]["train"] == pytest.approx(3 * 0.05, abs=0.05)  # three epochs, two runs summed
    assert {"train", "logging", "checkpoint", "other"} <= set(spent["seconds"])
    assert sum(spent["shares"].values()) == pytest.approx(1.0, abs=1e-6)
    assert sum(spent["seconds"].values()) == pytest.approx(spent["wall_seconds"], rel=1e-6)
