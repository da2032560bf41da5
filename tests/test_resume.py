"""Interruption: a stage killed with SIGKILL after an epoch resumes from its checkpoint and ends exactly where an
uninterrupted run ends; stale or corrupt checkpoints are dropped; RNG states survive weights_only loading."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from selfsup.training.engine import cpu_has_bf16
from selfsup.loop.resume import Resume, fingerprint, loaded_code, rng_state, set_rng_state
from tests.synthetic import read_params, stage_workspace, write_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = {
    "finetune": (["stages.finetune", "--init", "scratch", "--seed", "0"], "finetune-scratch-seed0",
                 ["models/finetune/scratch/seed0.pt", "metrics/runs/finetune/scratch/seed0"],
                 "metrics/runs/finetune/scratch/seed0"),
    "pretrain": (["stages.pretrain", "--seed", "0"], "pretrain-seed0",
                 ["models/pretrained/seed0.pt", "metrics/runs/pretrain/seed0"], "metrics/runs/pretrain/seed0"),
}
VOLATILE = ("epoch_seconds", "images_per_s", "examples_per_s")  # timings differ run to run


def command(ws: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", *args]


def env(ws: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ws)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return stage_workspace(tmp_path_factory.mktemp("resume"), pretext={"epochs": 4, "lr": 0.01},
                           finetune={"epochs": 4, "lr": 0.01})


@contextmanager
def edited_params(ws: Path, edit: Callable[[dict], None]) -> Iterator[None]:
    """The workspace's params.yaml and hardware.yaml changed by `edit` (in place, on both as one mapping) for the
    block, restored after it."""
    originals = {name: (ws / name).read_text() for name in ("params.yaml", "hardware.yaml")}
    params = read_params(ws)
    edit(params)
    write_params(ws, params)
    try:
        yield
    finally:
        for name, text in originals.items():
            (ws / name).write_text(text)


def histories(live: Path) -> dict[str, list[str]]:
    out = {}
    for tsv in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        if tsv.stem in VOLATILE:
            continue
        rows = tsv.read_text().splitlines()
        out[str(tsv.relative_to(live))] = [r.split("\t", 1)[1] for r in rows]  # drop the timestamp column
    return out


def summary(live: Path) -> dict:
    data = yaml.safe_load((live / "metrics.json").read_text())
    for key in ("wall_seconds", "time", *VOLATILE):  # timings differ run to run
        data.pop(key, None)
    data.get("final", {}).pop("wall_seconds", None)
    data.get("final", {}).pop("train_seconds", None)
    return data


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(STAGES))
def test_killed_stage_resumes_to_the_uninterrupted_result(workspace, name):
    args, resume_name, outputs, live = STAGES[name]
    ws = workspace
    checkpoint = ws / ".resume" / f"{resume_name}.pt"
    subprocess.run(command(ws, args), cwd=ws, env=env(ws), check=True, capture_output=True)
    reference = (histories(ws / live), summary(ws / live), torch.load(ws / outputs[0], weights_only=True))
    assert not checkpoint.exists()  # removed after success

    for out in outputs:  # what DVC does before it re-runs a stage
        path = ws / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    proc = subprocess.Popen(command(ws, args), cwd=ws, env=env(ws), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # in the epoch after the first checkpoint
    assert proc.wait() == -signal.SIGKILL, "the stage finished before it could be killed"
    assert checkpoint.exists() and not (ws / outputs[0]).exists()

    for out in outputs:
        path = ws / out
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = subprocess.run(command(ws, args), cwd=ws, env=env(ws), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: continuing after epoch" in resumed.stderr
    assert histories(ws / live) == reference[0]  # every epoch's metrics, the interrupted ones included
    assert summary(ws / live) == reference[1]
    weights = torch.load(ws / outputs[0], weights_only=True)["state_dict"]
    for key, value in reference[2]["state_dict"].items():
        assert torch.equal(weights[key], value), key
    assert not checkpoint.exists()


def test_checkpoint_of_other_params_or_corrupt_is_dropped(tmp_path, capsys):
    stale = Resume("stage", "params-a", root=tmp_path)
    stale.save({"epoch": 1})
    assert Resume("stage", "params-a", root=tmp_path).load()["epoch"] == 1
    assert Resume("stage", "params-b", root=tmp_path).load() is None
    assert not (tmp_path / "stage.pt").exists()
    assert "belongs to other params, inputs or code" in capsys.readouterr().err
    (tmp_path / "stage.pt").write_bytes(b"half a checkpoint")
    assert Resume("stage", "params-a", root=tmp_path).load() is None
    assert not (tmp_path / "stage.pt").exists()


def test_fingerprint_follows_params_and_inputs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.npy").write_bytes(b"1")
    a = fingerprint({"lr": 0.1}, [tmp_path / "d"])
    assert a == fingerprint({"lr": 0.1}, [tmp_path / "d"])
    assert a != fingerprint({"lr": 0.2}, [tmp_path / "d"])
    (tmp_path / "d" / "x.npy").write_bytes(b"2")
    assert a != fingerprint({"lr": 0.1}, [tmp_path / "d"])


def test_fingerprint_follows_the_code(tmp_path):
    module = tmp_path / "step.py"
    module.write_text("LR = 0.1\n")
    a = fingerprint({"lr": 0.1}, [], code=[module])
    module.write_text("LR = 0.2\n")
    assert a != fingerprint({"lr": 0.1}, [], code=[module])
    # by default: every module imported from the working directory, this one included
    assert Path(__file__).resolve() in loaded_code(ROOT) and Path(torch.__file__).resolve() not in loaded_code(ROOT)


@pytest.mark.e2e
def test_an_edited_dependency_between_kill_and_rerun_starts_over(workspace):
    args, resume_name, outputs, live = STAGES["pretrain"]
    ws = workspace
    checkpoint = ws / ".resume" / f"{resume_name}.pt"
    proc = subprocess.Popen(command(ws, args), cwd=ws, env=env(ws), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and checkpoint.exists()
    engine = ws / "selfsup" / "training" / "engine.py"
    original = engine.read_text()
    try:
        engine.write_text(original + "\n# an edit to a module pretraining imports\n")
        rerun = subprocess.run(command(ws, args), cwd=ws, env=env(ws), capture_output=True, text=True)
    finally:
        engine.write_text(original)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "belongs to other params, inputs or code; removed, starting over" in rerun.stderr
    assert "resume: continuing" not in rerun.stderr and not checkpoint.exists()


def test_rng_states_round_trip_through_weights_only(tmp_path):
    gen = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(4)
    random.gauss(0, 1)  # a cached Gaussian in Python's state
    torch.save(rng_state(gen), tmp_path / "rng.pt")
    first = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1),
             torch.rand(1, generator=gen))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), gen)
    again = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1),
             torch.rand(1, generator=gen))
    assert first[:4] == again[:4] and torch.equal(first[4], again[4]) and torch.equal(first[5], again[5])


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_gives_identical_metrics_on_cpu(workspace, precision):
    # bf16 autocast too (what `auto` picks on a CPU with bf16 instructions): the same kernels on the same
    # machine give the same run
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (bf16 would be emulated)")
    ws = workspace
    args, _, outputs, live = STAGES["finetune"]
    runs = []
    with edited_params(ws, lambda params: params.update(precision=precision)):
        for _ in range(2):
            proc = subprocess.run(command(ws, args), cwd=ws, env=env(ws), check=True, capture_output=True, text=True)
            assert f"precision {precision}" in proc.stderr
            runs.append((histories(ws / live), summary(ws / live), (ws / outputs[0]).read_bytes()))
    assert runs[0] == runs[1]  # the checkpoint too, byte for byte: its SHA-1 names the weights (study budgets)


def test_the_same_weights_save_to_the_same_bytes(tmp_path):
    """save_torch goes through a temporary file; its random name must not reach the archive, or a rerun with
    identical weights would have another SHA-1 (and another DVC hash)."""
    from selfsup.core.files import save_torch
    weights = {"state_dict": torch.nn.Linear(3, 2).state_dict(), "arch": "a"}
    save_torch(weights, tmp_path / "one.pt")
    save_torch(weights, tmp_path / "two.pt")
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "one.pt")["state_dict"]["weight"], weights["state_dict"]["weight"])


@pytest.mark.e2e
def test_same_seed_gives_byte_identical_splits(workspace):
    ws = workspace
    splits = ws / "data" / "splits" / "seed0"
    first = {p.name: p.read_bytes() for p in splits.iterdir()}
    assert set(first) == {"validation.npy", "labelled.npy", "counts.json"}
    subprocess.run([sys.executable, "-m", "stages.split", "--seed", "0"], cwd=ws, env=env(ws), check=True,
                   capture_output=True)
    assert {p.name: p.read_bytes() for p in splits.iterdir()} == first


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(STAGES))
def test_streamed_images_give_the_same_run_as_images_on_the_device(workspace, name):
    # param `stream`: pretraining, fine-tune (and probes) read batches from the memory-mapped arrays instead
    # of a device copy, prefetching the next one; same batches, same order, so the same run
    ws = workspace
    args, _, outputs, live = STAGES[name]
    runs = []
    for mode in ("never", "always"):
        def edit(params: dict, mode: str = mode) -> None:
            params["stream"] = mode
            params["pretext"]["epochs"] = params["finetune"]["epochs"] = 2  # enough to compare, CI-cheap

        with edited_params(ws, edit):
            subprocess.run(command(ws, args), cwd=ws, env=env(ws), check=True, capture_output=True)
        result = summary(ws / live)
        section = result["pretext"] if name == "pretrain" else result["final"]
        assert section.pop("streamed") == (mode == "always")  # the summary says which it was
        runs.append((histories(ws / live), result))
    assert runs[0] == runs[1]


@pytest.mark.e2e
def test_the_fractions_own_budget_sets_the_fine_tune_epochs(workspace):
    ws = workspace
    args, _, outputs, live = STAGES["finetune"]

    def budget(params: dict) -> None:
        params["finetune"]["epochs_by_fraction"] = [[0.5, 7], [params["fraction"], 2]]  # this run's: 2, not 4

    with edited_params(ws, budget):
        subprocess.run(command(ws, args), cwd=ws, env=env(ws), check=True, capture_output=True, text=True)
    best = summary(ws / live)["final"]
    assert best["steps"] == 2 * best["steps_per_epoch"]
    assert len((ws / live / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()) == 1 + 2


@pytest.mark.e2e
def test_pretraining_monitors_every_few_epochs_and_always_the_last(workspace):
    """pretext.monitor_every: the held-out score, controls and probe at step 0 (the random extractor), every
    n-th epoch and the last, on all probe_size images; the training loss every epoch; the stage's time split
    names the monitors' share."""
    ws = workspace

    def every_3(params: dict) -> None:
        params["pretext"]["monitor_every"] = 3

    with edited_params(ws, every_3):
        proc = subprocess.run(command(ws, STAGES["pretrain"][0]), cwd=ws, env=env(ws), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    live = ws / STAGES["pretrain"][3]

    def steps(metric: str) -> list[int]:
        rows = (live / "plots" / "metrics" / f"{metric}.tsv").read_text().splitlines()[1:]
        return [int(r.split("\t")[0]) for r in rows]
    assert steps("train/pretext_loss") == [1, 2, 3, 4]
    for metric in ("val/pretext_accuracy", "val/control_other_centre", "probe/linear_accuracy"):
        assert steps(metric) == [0, 3, 4], metric
    data = yaml.safe_load((live / "metrics.json").read_text())
    assert data["pretext"]["heldout_images"] == 30  # probe_size 40, as many as the 30 validation images allow
    assert {"train", "heldout", "probe"} <= set(data["time"]["seconds"])
    assert "% train" in proc.stdout
