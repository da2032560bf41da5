"""End to end: a fresh copy of the repository, `dvc exp run` on a tiny synthetic archive, like a user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.synthetic import cifar_archive

ROOT = Path(__file__).resolve().parents[1]

TINY_PROFILE = """# @package _global_
profile_name: tiny
model:
  stem: imagenet
pretext:
  epochs: 1
  batch_size: 64
  probe_size: 40
  eval_batch_size: 200
finetune:
  epochs: 3
  batch_size: 32
  lr: 0.05
  eval_batch_size: 200
"""


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def fresh_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("metrics/", "plots/")) and f != "dvc.lock":
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The repository copy after one tiny `dvc exp run`, with the archive behind data.url (file://)."""
    tmp = tmp_path_factory.mktemp("e2e")
    archive = tmp / "mirror" / "tiny-cifar.tar.gz"
    md5 = cifar_archive(archive, n_train=300, n_test=100, batches=2)
    repo = fresh_copy(tmp / "repo")
    # a user behind a firewall points the composed config at a local mirror
    config = (repo / "conf" / "config.yaml").read_text()
    config = config.replace("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", f"file://{archive}")
    config = config.replace("c58f30108f718f92721af3b95e74349a", md5)
    (repo / "conf" / "config.yaml").write_text(config)
    (repo / "conf" / "profile" / "tiny.yaml").write_text(TINY_PROFILE)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny"], repo)
    first = run(["dvc", "exp", "run", "-S", "profile=tiny"], repo)
    return repo, first


def test_exp_run_produces_metrics_plots_and_figures(study):
    repo, first = study
    for stage in ("download", "split", "init", "pretrain", "finetune@scratch", "finetune@pretrained", "compare"):
        assert f"Running stage '{stage}'" in first.stdout
    compare = json.loads((repo / "metrics" / "compare.json").read_text())
    for init in ("scratch", "pretrained"):
        run_ = compare[init]
        assert 1 <= run_["best_epoch"] <= 3
        for key in ("best_f1_macro", "best_precision_macro", "best_recall_macro", "best_accuracy"):
            assert 0.0 <= run_[key] <= 1.0
        assert run_["train_seconds"] > 0
        # the synthetic classes are easy: both runs learn beyond chance (0.1)
        assert run_["best_accuracy"] > 0.3, run_
        summary = json.loads((repo / "metrics" / "finetune" / init / "metrics.json").read_text())
        assert summary["best"]["epoch"] == run_["best_epoch"]
        assert summary["best"]["test"]["f1_macro"] == pytest.approx(run_["best_f1_macro"])
        rows = (repo / "metrics" / "finetune" / init / "predictions.csv").read_text().splitlines()
        assert rows[0] == "index,actual,predicted" and len(rows) == 101
    assert compare["pretrained_minus_scratch"]["best_f1_macro"] == pytest.approx(
        compare["pretrained"]["best_f1_macro"] - compare["scratch"]["best_f1_macro"])
    assert 0 <= compare["pretext"]["probe_random_extractor"] <= 1
    for png in ("curves", "pretext", "examples", "confusion"):
        assert (repo / "plots" / f"{png}.png").stat().st_size > 5000
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile_name"] == "tiny" and params["model"]["stem"] == "imagenet"


def test_second_repro_is_a_no_op_and_shows_plots(study):
    repo, _ = study
    again = run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout
    metrics = run(["dvc", "metrics", "show", "--json"], repo)
    assert "best_f1_macro" in metrics.stdout
    shown = run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    assert (repo / "dvc_plots" / "index.html").exists(), shown.stdout


def test_new_fraction_skips_download_and_pretrain(study):
    repo, _ = study
    out = run(["dvc", "exp", "run", "-S", "profile=tiny", "-S", "fraction=0.5"], repo).stdout
    for stage in ("download", "init", "pretrain"):
        assert f"Running stage '{stage}'" not in out, out
    for stage in ("split", "finetune@scratch", "finetune@pretrained", "compare"):
        assert f"Running stage '{stage}'" in out, out
    split = json.loads((repo / "metrics" / "split.json").read_text())
    assert split["fraction"] == 0.5 and split["labelled_size"] == pytest.approx(split["pool_size"] / 2, abs=10)


def test_changing_a_pretext_param_keeps_scratch(study):
    repo, _ = study
    out = run(["dvc", "exp", "run", "-S", "profile=tiny", "-S", "fraction=0.5", "-S", "pretext.jitter=2"],
              repo).stdout
    assert "Running stage 'pretrain'" in out and "Running stage 'finetune@pretrained'" in out
    assert "Running stage 'finetune@scratch'" not in out and "Running stage 'split'" not in out


def test_bad_param_fails_in_one_line_and_writes_nothing(study):
    repo, _ = study
    proc = run(["dvc", "exp", "run", "-S", "profile=tiny", "-S", "fraction=1.5"], repo, check=False)
    assert proc.returncode != 0
    assert "error: param 'fraction' is 1.5: must be <= 1" in proc.stderr + proc.stdout
    assert not (repo / "data" / "splits").exists()
