"""End to end: a fresh copy of the repository, `dvc exp run` on a tiny synthetic archive, like a user.

The tests are one scenario, in file order, on one module-scoped copy: later ones use the experiments and the
run-cache that earlier ones left (the second repro is a no-op after the first), so run the module; the study
command's test makes every experiment it reads, so it also runs alone (`-k study_command`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.synthetic import HARDWARE, cifar_archive
from study.experiments import flatten

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e  # dvc in a fresh copy of the repository: the complete run only

EXP_SHOW = ["dvc", "exp", "show", "--only-changed"]

TINY_PROFILE = """# @package _global_
profile_name: tiny
seeds: [0, 1]
probe:
  C: [0.1, 1.0]
model:
  arch: nets.fast_cnn:half   # the cpu profile's network: a stage run here is mostly its imports
  stem: cifar
pretext:
  epochs: 1
  batch_size: 64
  probe_size: 40
  eval_batch_size: 200
finetune:
  epochs: 3
  batch_size: 32
  lr: 0.02
  eval_batch_size: 200
"""


TINY_PROTOCOL = """question: Does the tiny pretraining help?
profile: tiny
metric: test_f1_macro
alpha: 0.05
margin: 0.05
budgets: {1.0: 3, 0.1: 3}
arms:
  - {pretext: context, fractions: [1.0, 0.1], seeds: [0, 1]}
  - {pretext: rotation, fractions: [0.1, 1.0], seeds: [0, 1]}
  - {pretext: context, fractions: [0.1], seeds: [0, 1], budget_factor: 2}
  - {pretext: rotation, fractions: [1.0], seeds: [0, 1], probe_only: true}
endpoints:
  primary: {pretext: context, fraction: 0.1}
  secondary: [{pretext: context, fraction: 1.0}, {pretext: rotation, fraction: 0.1}]
assumed_sd: {0.1: 0.05, 1.0: 0.05}
sd_source: made up for the test
estimate: {pretrain_seconds: 10, finetune_epoch_seconds: 2, arm_other_seconds: 10}
numerics: {precision: fp32, compile: false}
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
    """The repository copy after one tiny `dvc exp run`, reading its archive from a local mirror (file://)."""
    tmp = tmp_path_factory.mktemp("e2e")
    archive = tmp / "mirror" / "tiny-cifar.tar.gz"
    cifar_archive(archive, n_train=300, n_test=100, batches=2)
    repo = fresh_copy(tmp / "repo")
    # a user behind a firewall points this machine's hardware.yaml at a local mirror: no stage declares it, so
    # nothing re-runs for it and no dvc.lock holds it; the knobs pinned as every test's (fp32 on any CPU)
    (repo / "hardware.yaml").write_text(yaml.safe_dump(HARDWARE | {"data_location": f"file://{archive}"}))
    (repo / "conf" / "profile" / "tiny.yaml").write_text(TINY_PROFILE)
    (repo / "protocol.yaml").write_text(TINY_PROTOCOL)  # committed before any run, as the study's is
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny"], repo)
    first = run(["dvc", "exp", "run", "-S", "profile=tiny"], repo)
    return repo, first


def test_exp_run_produces_metrics_plots_and_figures(study):
    repo, first = study
    for stage in ("download", "split@0", "split@1", "pretrain@0", "pretrain@1", "finetune_scratch@0",
                  "finetune_scratch@1", "finetune_pretrained@0", "finetune_pretrained@1", "linear_probe@0",
                  "linear_probe@1", "compare"):
        assert f"Running stage '{stage}'" in first.stdout
    compare = json.loads((repo / "metrics" / "compare.json").read_text())
    assert compare["seeds"] == [0, 1]
    # where the training stages' time went, by part, shares of their wall time
    for kind, parts in (("pretrain", {"train", "probe", "heldout", "checkpoint"}),
                        ("finetune", {"train", "validation", "test", "checkpoint"})):
        shares = compare["time_shares"][kind]
        assert parts <= set(shares) and sum(shares.values()) == pytest.approx(1.0, abs=1e-6), shares
    for init in ("scratch", "pretrained"):
        for seed, run_ in zip((0, 1), compare["runs"][init]):
            for key in ("test_f1_macro", "test_precision_macro", "test_recall_macro", "test_accuracy",
                        "probe_f1_macro", "val_f1_auc"):
                assert 0.0 <= run_[key] <= 1.0
            assert run_["train_seconds"] > 0 and len(run_["per_class_f1"]) == 10
            # the synthetic classes are easy: every run learns well beyond chance (0.1), even in 3 tiny epochs
            assert run_["test_accuracy"] > 0.2, run_
            live = repo / "metrics" / "runs" / "finetune" / init / f"seed{seed}"
            summary = json.loads((live / "metrics.json").read_text())
            assert summary["final"]["epoch"] == 3 and summary["final"]["seed"] == seed  # the last: no selection
            assert summary["final"]["test"]["f1_macro"] == pytest.approx(run_["test_f1_macro"])
            # test once: the per-epoch log holds training and validation only
            logs = live / "plots" / "metrics"
            logged = {p.relative_to(logs).parts[0] for p in logs.rglob("*.tsv")}
            assert "test" not in logged and {"train", "val"} <= logged
            assert run_["epochs_to_loss_threshold"] is None or 1 <= run_["epochs_to_loss_threshold"] <= 3
            rows = (live / "predictions.csv").read_text().splitlines()
            assert rows[0] == "index,actual,predicted" and len(rows) == 101
            if run_["steps_to_threshold"] is not None:
                assert run_["steps_to_threshold"] == run_["epochs_to_threshold"] * summary["final"]["steps_per_epoch"]
    # the seeds differ (the scratch runs start from different weights)
    assert compare["runs"]["scratch"][0]["val_f1_auc"] != compare["runs"]["scratch"][1]["val_f1_auc"]
    primary = compare["tests"]["test_f1_macro"]
    values = {init: [r["test_f1_macro"] for r in compare["runs"][init]] for init in ("scratch", "pretrained")}
    assert primary["scratch"]["mean"] == pytest.approx(sum(values["scratch"]) / 2)
    assert primary["difference"]["mean"] == pytest.approx(primary["pretrained"]["mean"] - primary["scratch"]["mean"])
    assert primary["difference"]["df"] == 1 and 0 <= primary["difference"]["p"] <= 1
    probes = [json.loads((repo / "metrics" / "runs" / "linear_probe" / f"seed{s}.json").read_text()) for s in (0, 1)]
    assert [p["seed"] for p in probes] == [0, 1] and probes[0]["scratch"]["C"] in (0.1, 1.0)
    assert probes[0]["scratch"]["test"]["accuracy"] > 0.3  # even random features separate the toy classes
    for init in ("scratch", "pretrained"):
        assert [r["probe_f1_macro"] for r in compare["runs"][init]] == [p[init]["test"]["f1_macro"] for p in probes]
        assert [r["knn_f1_macro"] for r in compare["runs"][init]] == [p[init]["knn"]["test"]["f1_macro"] for p in probes]
    assert probes[0]["scratch"]["knn"]["k"] == 20 and probes[0]["scratch"]["knn"]["test"]["accuracy"] > 0.3
    assert "knn_f1_macro" in compare["tests"]
    # a replicate is (split, pretraining, fine-tune): each seed has its own of each
    splits = [repo / "data" / "splits" / f"seed{s}" for s in (0, 1)]
    assert (splits[0] / "validation.npy").read_bytes() != (splits[1] / "validation.npy").read_bytes()
    assert (splits[0] / "labelled.npy").read_bytes() != (splits[1] / "labelled.npy").read_bytes()
    assert (repo / "models/pretrained/seed0.pt").read_bytes() != (repo / "models/pretrained/seed1.pt").read_bytes()
    # compute-fair: each pretrained run adds its own seed's pretraining, shared over 3 fractions
    shares = [r["pretrain_share_seconds"] for r in compare["runs"]["pretrained"]]
    assert shares == pytest.approx([t / 3 for t in compare["pretext"]["train_seconds"]])
    assert all(r["pretrain_share_seconds"] == 0 for r in compare["runs"]["scratch"])
    reached = [r for r in compare["runs"]["pretrained"] if r["seconds_to_threshold"] is not None]
    if reached:
        assert compare["convergence"]["pretrained"]["seconds_with_pretraining"] == pytest.approx(
            sum(r["seconds_to_threshold"] + r["pretrain_share_seconds"] for r in reached) / len(reached))
    assert 0 <= compare["pretext"]["probe_random_extractor"] <= 1
    # held out means never pretrained on: pretraining draws from the training images minus validation
    for s in (0, 1):
        pre_summary = json.loads((repo / "metrics" / "runs" / "pretrain" / f"seed{s}" / "metrics.json").read_text())
        split = json.loads((repo / "data" / "splits" / f"seed{s}" / "counts.json").read_text())
        assert pre_summary["pretext"]["images"] == 300 - split["validation_size"] == 270
        assert pre_summary["pretext"]["heldout_images"] == 30 and pre_summary["seed"] == s
    controls = compare["pretext"]["controls"]
    assert set(controls) == {"other_centre", "other_neighbour", "other_pair_centre", "shuffled"}
    assert all(0 <= v <= 1 for v in controls.values())
    for png in ("curves", "pretext", "examples", "confusion"):
        assert (repo / "plots" / f"{png}.png").stat().st_size > 5000
    curves = (repo / "metrics" / "compare" / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("epoch,init,val_f1_macro") and len(curves) == 1 + 2 * 3  # 3 epochs x 2 inits
    assert len((repo / "metrics" / "compare" / "predictions_scratch.csv").read_text().splitlines()) == 201
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile_name"] == "tiny" and params["model"]["arch"] == "nets.fast_cnn:half"


def test_second_repro_is_a_no_op_and_shows_plots(study):
    repo, _ = study
    # a fresh clone has no bytecode caches: the folder deps (selfsup/pretexts, nets) must not see them
    for cache in list(repo.rglob("__pycache__")):
        shutil.rmtree(cache)
    again = run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout
    # DVC's metrics are the compare stage's small summary, numbers only; the per-run logs are not metrics
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    declared = {path for rev in shown.values() for path in rev["data"]}
    assert declared == {"metrics/summary.json"}, declared
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    compare = json.loads((repo / "metrics" / "compare.json").read_text())
    assert summary["scratch"]["test_f1"] == compare["tests"]["test_f1_macro"]["scratch"]["mean"]
    assert summary["test_f1_gain"]["mean"] == compare["tests"]["test_f1_macro"]["difference"]["mean"]
    assert summary["pretext_heldout"] == compare["pretext"]["final_heldout"]
    assert summary["wall_minutes"] == pytest.approx(compare["stage_wall_seconds"] / 60)
    assert all(isinstance(v, (int, float)) for v in flatten(summary).values()) and len(flatten(summary)) <= 16
    # `dvc plots show` leads with the comparison plots (mean over seeds) and draws no per-run log
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "metrics/runs/finetune" not in page and "metrics/runs/pretrain" not in page
    first = page.index("Validation macro F1 (mean over seeds)")
    # the inits differ by colour as well as dash, with a legend that names them
    assert '"color": {"field": "init"' in page and '"domain": ["scratch", "pretrained"]' in page
    assert first < page.index("Confusion matrix, scratch") and first < page.index("curves.png")


def test_editing_another_task_or_a_reader_reruns_no_training_stage(study):
    # exact deps: pretrain depends on the chosen task's module (context) alone, and only download on the readers
    repo, _ = study
    edited = [repo / "selfsup" / "pretexts" / "jigsaw.py", repo / "selfsup" / "sources.py"]
    originals = {path: path.read_text() for path in edited}
    try:
        for path in edited:
            path.write_text(path.read_text() + "\n# edited\n")
        status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
        assert set(status) == {"download"}, status
        out = run(["dvc", "repro"], repo).stdout
        assert "Running stage 'download'" in out and out.count("Running stage") == 1, out  # same dataset: no more
    finally:
        for path, text in originals.items():
            path.write_text(text)
        run(["dvc", "repro"], repo)


def test_new_fraction_skips_download_and_pretrain(study):
    repo, _ = study
    before = {s: np.load(repo / "data" / "splits" / f"seed{s}" / "labelled.npy") for s in (0, 1)}
    out = run(["dvc", "exp", "run", "-S", "profile=tiny", "-S", "fraction=0.1"], repo).stdout
    for stage in ("download", "pretrain@0", "pretrain@1"):
        assert f"Running stage '{stage}'" not in out, out
    for stage in ("split@0", "finetune_scratch@0", "finetune_pretrained@1", "linear_probe@1", "compare"):
        assert f"Running stage '{stage}'" in out, out
    for s in (0, 1):
        split = json.loads((repo / "data" / "splits" / f"seed{s}" / "counts.json").read_text())
        assert split["fraction"] == 0.1 and split["labelled_size"] == 30 and split["pool_size"] == 270
        # nested within the seed: the 10 % subset is inside that seed's 100 % one
        assert set(np.load(repo / "data" / "splits" / f"seed{s}" / "labelled.npy")) < set(before[s])


def test_exp_show_is_a_table_people_can_read(study, tmp_path):
    # the study as its commit and one experiment that differs in the fraction alone (a copy, so the later
    # tests keep their baseline): the README's view with DVC's own flags lists what differs between the rows,
    # the summary metrics and a few dep columns (no --drop); plain `dvc exp show` at most 90 columns
    repo, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "the tiny study at fraction 0.1"], copy)
    out = run(["dvc", "exp", "run", "-S", "profile=tiny", "-S", "fraction=1.0"], copy).stdout
    assert "Running stage 'pretrain@" not in out, out  # restored from the run-cache
    assert " ".join(EXP_SHOW) in (ROOT / "README.md").read_text()
    header = run([*EXP_SHOW, "--csv"], copy).stdout.splitlines()[0].split(",")
    assert len(header) <= 40, header
    assert len(run(["dvc", "exp", "show", "--csv"], copy).stdout.splitlines()[0].split(",")) <= 90
    summary = flatten(json.loads((copy / "metrics" / "summary.json").read_text()))
    metric_columns = [c for c in header if c in summary]  # the summary's numbers, no per-run key
    assert "fraction" in header and "scratch.test_f1" in header and "test_f1_gain.mean" in header
    assert len(metric_columns) <= 16 and not any(c.endswith((".json:step", "best.epoch")) for c in header), header
    declared = flatten(yaml.safe_load((copy / "params.yaml").read_text()))
    params = [c for c in header if c in declared]
    assert params == ["fraction"], params  # the only param that differs
    deps = [c for c in header if "/" in c]
    assert set(deps) <= {"data/splits/seed0", "data/splits/seed1", "metrics/runs"}, deps  # what a fraction changes


UPSIDE = """\"\"\"Pretext `upside`: was the image turned upside down? (The end-to-end test's added task.)\"\"\"

import torch

from selfsup.training.augment import normalize, random_crop_flip
from selfsup.pretexts.rotation import Rotation, rotate


class Upside(Rotation):
    chance = 1 / 2

    def __init__(self, params, image_size, mean, std):
        super().__init__({"pretext": {"rotation": params["pretext"]["upside"]}}, image_size, mean, std)

    def batch(self, images, generator):
        x = normalize(random_crop_flip(images, self.pad, generator), self.mean, self.std)
        turns = 2 * torch.randint(0, 2, (len(x),), generator=generator, device=x.device)
        return rotate(x, turns), turns
"""


def test_a_new_pretext_module_reruns_only_pretraining_and_pretrained_runs(study):
    repo, _ = study
    (repo / "selfsup" / "pretexts" / "upside.py").write_text(UPSIDE)
    registry = repo / "selfsup" / "pretexts" / "__init__.py"  # one line in the registry, one in the declarations
    registry.write_text(registry.read_text().replace('    "simclr": "SimCLR",\n', '    "simclr": "SimCLR",\n'
                                                                                    '    "upside": "Upside",\n'))
    config = repo / "selfsup" / "config.py"
    config.write_text(config.read_text().replace('"simclr": SimCLR}', '"simclr": SimCLR, "upside": Rotation}'))
    run([sys.executable, "-m", "tools.params_doc"], repo)  # conf/pretext/upside.yaml, the docs
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a new pretext task"], repo)
    try:  # one seed, as a part of an arm runs it (the comparison is the study command's test's)
        out = run(["dvc", "exp", "run", "-S", "profile=tiny", "-S", "fraction=0.1", "-S", "pretext=upside", "-S",
                   "seeds=[0]", "finetune_scratch", "finetune_pretrained", "linear_probe"], repo).stdout
        summary = json.loads((repo / "metrics" / "runs" / "pretrain" / "seed0" / "metrics.json").read_text())
    finally:  # the later tests run on the original code
        run(["git", "reset", "-q", "--hard", "HEAD~1"], repo)
    for stage in ("pretrain@0", "finetune_pretrained@0", "linear_probe@0"):
        assert f"Running stage '{stage}'" in out, out
    for stage in ("download", "split@", "finetune_scratch@"):
        assert f"Running stage '{stage}" not in out, out  # restored: the scratch runs do not depend on pretexts
    assert summary["pretext"]["task"] == "upside" and summary["pretext"]["chance"] == 0.5


def test_bad_param_fails_in_one_line_and_writes_nothing(study):
    repo, _ = study
    proc = run(["dvc", "exp", "run", "-S", "profile=tiny", "-S", "fraction=1.5"], repo, check=False)
    assert proc.returncode != 0
    assert "error: param 'fraction' is 1.5: must be <= 1" in proc.stderr + proc.stdout
    failed = re.search(r"Running stage 'split@(\d+)'", proc.stdout).group(1)  # the first to run, and fail
    split = repo / "data" / "splits" / f"seed{failed}"
    assert not split.exists() or not any(split.iterdir())  # it left no half-written output


def test_the_study_command_runs_what_is_left_and_reports_it_by_the_protocol(study):
    repo, _ = study
    # no arm has a record yet: the report refuses; one machine takes one arm (--arms), records and commits it
    refused = run([sys.executable, "-m", "study", "report"], repo, check=False)
    assert refused.returncode == 1 and "no fine-tuned arm has a record yet" in refused.stderr, refused.stderr
    plan = run([sys.executable, "-m", "study", "run", "--plan"], repo).stdout
    assert "study: 0/6 arms recorded" in plan and "left  dvc exp run -n rotation-1 -S profile=tiny -S pretext=rotation" \
        " -S fraction=1.0 -S seeds=[0,1] -S hardware.yaml:precision=fp32 -S hardware.yaml:compile=false" in plan, plan
    # ... in parts of one seed (about 22 s a seed here): each part's seeds recorded as it ends, then the arm
    one = run([sys.executable, "-m", "study", "run", "--arms", "rotation-1", "--no-report", "--part-minutes", "0.3"],
              repo).stdout
    assert "[1/1] rotation-1: 0 arms recorded" in one and "in parts of 1 seeds" in one, one
    assert "part rotation-1-s0: 0/2 seeds recorded" in one and "part rotation-1-s1: 1/2 seeds recorded" in one, one
    assert "recorded rotation-1: metrics/arms/rotation-1.json" in one, one
    last, arm, *parts = run(["git", "log", "-4", "--format=%s"], repo).stdout.splitlines()
    assert arm.startswith("study record: arm rotation-1, assembled from 2 parts") and last.startswith(
        "study run log: "), (last, arm)
    assert [p_.split(" (")[0] for p_ in parts] == ["study record: arm rotation-1, seeds 1",
                                                   "study record: arm rotation-1, seeds 0"], parts
    assert run(["git", "status", "--porcelain", "metrics/arms", "metrics/study_run.json"], repo).stdout == ""  # committed
    summary = json.loads((repo / "metrics" / "runs" / "pretrain" / "seed1" / "metrics.json").read_text())
    assert summary["pretext"] == {"task": "rotation", "metric": "accuracy", "chance": 0.25, "images": 270,
                                  "heldout_images": 30, "streamed": False}  # the last part's pretraining
    out = run([sys.executable, "-m", "study", "run"], repo).stdout
    assert "[4/6] rotation-1: recorded (metrics/arms/rotation-1.json)" in out, out
    assert "Running stage 'finetune_pretrained@0'" in out and "report: 5 arms" in out, out  # 1 probe-only
    assert "dvc exp run -n rotation-1-probe" in out and "dvc exp run -n context-0.1-x2" in out, out
    # another pretext at a fraction already run: only its pretrained runs run; the scratch runs (context-0.1's, the
    # arm before) and the pretrainings (rotation-1's parts: a pretraining does not depend on the fraction) restored
    probes = out[out.index("] rotation-1-probe:"):]  # probes only where rotation-1's parts probed: all restored
    assert "Running stage" not in probes and "Stage 'linear_probe@1' is cached" in probes, probes
    rotation = out[out.index("] rotation-0.1:"):out.index("] context-0.1-x2:")]
    assert "Running stage 'finetune_pretrained@0'" in rotation, rotation
    for restored in ("split@", "pretrain@", "finetune_scratch@"):
        assert f"Running stage '{restored}" not in rotation, rotation
    again = run([sys.executable, "-m", "study", "run"], repo).stdout  # all recorded: it only reports
    assert "Running stage" not in again and "[6/6] rotation-1-probe: recorded" in again, again
    sessions = json.loads((repo / "metrics" / "study_run.json").read_text())["sessions"]
    assert [s_["arms_run"] for s_ in sessions][-2:] == [["context-0.1", "context-1", "rotation-0.1", "context-0.1-x2",
                                                         "rotation-1-probe"], []]
    records = {p_.stem: json.loads(p_.read_text()) for p_ in (repo / "metrics" / "arms").glob("*.json")}
    assert sorted(records) == ["context-0.1", "context-0.1-x2", "context-1", "rotation-0.1", "rotation-1",
                               "rotation-1-probe"]
    assert records["context-0.1-x2"]["params"]["finetune"]["epochs_by_fraction"] == [[0.1, 6]]
    pretext = records["rotation-0.1"]["compare"]["pretext"]
    assert (pretext["task"], pretext["chance"], set(pretext["controls"])) == ("rotation", 0.25, {"shuffled"})
    assert 0 <= pretext["final_heldout"] <= 1
    assert sorted(records["rotation-1-probe"]["probes"]) == ["0", "1"] and "compare" not in records["rotation-1-probe"]
    assert records["context-0.1"]["machine"]["cores"] >= 1 and records["context-0.1"]["wall_seconds"] > 0
    assert [(p_["experiment"], p_["seeds"]) for p_ in records["rotation-1"]["parts"]] == [("rotation-1-s0", [0]),
                                                                                       ("rotation-1-s1", [1])]
    assert records["rotation-1"]["wall_seconds"] == round(sum(p_["wall_seconds"] for p_ in records["rotation-1"]["parts"]),
                                                         1)

    study_json = json.loads((repo / "metrics" / "study.json").read_text())
    assert [a["arm"] for a in study_json["arms"]] == ["context-1", "context-0.1", "rotation-0.1", "rotation-1",
                                                      "context-0.1-x2"]
    primary, *secondary = study_json["endpoints"]
    assert (primary["pretext"], primary["fraction"], primary["n"]) == ("context", 0.1, 2)
    compare = records["context-0.1"]["compare"]
    assert primary["labelled_size"] == compare["labelled_size"] == 30
    assert primary["difference"] == compare["tests"]["test_f1_macro"]["difference"]
    from selfsup.analysis.stats import holm
    assert [e["p_holm"] for e in secondary] == holm([e["difference"]["p"] for e in secondary])
    readme, results = (repo / "README.md").read_text(), (repo / "docs" / "results.md").read_text()
    from study.markdown import readme_section
    from study.report import BEGIN, END
    from study.report_text import render, render_answer
    assert readme_section(readme, BEGIN, END) == render_answer(study_json)
    assert readme_section(results, BEGIN, END) == render(study_json)
    assert "| context at 10% **(primary)** | 30 | 2 |" in readme
    for png in ("label_efficiency", "fraction_curves"):
        assert (repo / "plots" / f"{png}.png").stat().st_size > 5000
    # a protocol other than the one the runs were made under: refused in one line
    (repo / "other.yaml").write_text(TINY_PROTOCOL.replace("margin: 0.05", "margin: 0.02"))
    refused = run([sys.executable, "-m", "study", "report", "--protocol", "other.yaml"], repo, check=False)
    assert refused.returncode == 1 and "differs from (or lacks) the one read here" in refused.stderr
    (repo / "other.yaml").unlink()
    # a fresh clone, no DVC cache and no experiment refs: the report regenerates study.json byte for byte
    clone = repo.parent / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], repo.parent)
    assert run(["git", "for-each-ref", "refs/exps/"], clone).stdout == "" and not (clone / ".dvc" / "cache").exists()
    run([sys.executable, "-m", "study", "report"], clone)
    assert (clone / "metrics" / "study.json").read_bytes() == (repo / "metrics" / "study.json").read_bytes()
    # the primary arm's params, lock and figures, then the report, as the branch's last commits (in a copy: the
    # later tests keep their baseline), so the branch's params.yaml, dvc.lock and metrics are the primary arm's
    copy = repo.parent / "recorded"
    shutil.copytree(repo, copy, symlinks=True)
    run(["git", "checkout", "-q", "--", "."], copy)  # the report's documents: the record writes them again
    # an experiment of the primary's name on another baseline (a renewed study's re-run arm): a bare name is
    # ambiguous to DVC, the record names the full ref
    root = run(["git", "rev-list", "--max-parents=0", "HEAD"], copy).stdout.strip()  # no experiment ran there
    run(["git", "update-ref", f"refs/exps/{root[:2]}/{root[2:]}/context-0.1", "HEAD"], copy)
    run([sys.executable, "-m", "study", "record"], copy)
    subjects = run(["git", "log", "--format=%s", "-2"], copy).stdout.splitlines()
    assert subjects[0].startswith("study: the report of 6 recorded arms") and subjects[1].startswith(
        "study: the primary arm context-0.1's params"), subjects
    committed = yaml.safe_load(run(["git", "show", "HEAD:params.yaml"], copy).stdout)
    lock = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], copy).stdout)
    assert committed["fraction"] == 0.1 and lock["stages"]["split@0"]["params"]["params.yaml"]["fraction"] == 0.1
    assert readme_section((copy / "README.md").read_text(), BEGIN, END) == render_answer(
        json.loads((copy / "metrics" / "study.json").read_text()))
    # the arm run in parts, run whole: DVC restores every run from its run-cache and the compare stage gives the
    # very comparison the parts were assembled into
    whole = run(["dvc", "exp", "run", "-n", "rotation-1-whole", "-S", "profile=tiny", "-S", "pretext=rotation", "-S",
                 "fraction=1.0", "-S", "seeds=[0,1]", "-S", "hardware.yaml:precision=fp32", "-S",
                 "hardware.yaml:compile=false"], copy).stdout
    assert "Running stage 'compare'" in whole and "Running stage 'finetune" not in whole, whole
    assert json.loads((copy / "metrics" / "compare.json").read_text()) == records["rotation-1"]["compare"]
    # the pretext comparison of the study's own arms at 10 %, context vs rotation, sharing the scratch runs
    full, tenth = study_json["experiments"][:2]  # context at 100 % and 10 %
    refused = run([sys.executable, "-m", "study", "pretexts", "--exp", full, "rotation-0.1"], repo, check=False)
    assert refused.returncode == 1 and "differ in fraction" in refused.stderr
    run([sys.executable, "-m", "study", "pretexts", "--exp", tenth, "rotation-0.1"], repo)
    from study import pretext_table as methods
    table = json.loads((repo / "metrics" / "methods.json").read_text())
    assert [r["task"] for r in table["rows"]] == ["context", "rotation"]
    assert table["rows"][0]["finetune"]["scratch"] == table["rows"][1]["finetune"]["scratch"]
    pretexts = (repo / "docs" / "pretexts.md").read_text()
    assert readme_section(pretexts, methods.BEGIN, methods.END) == methods.render(table)


def test_a_team_shares_the_study_through_a_dvc_remote(study, tmp_path):
    # push data, models and experiments to a DVC remote (a local directory here), clone, pull: nothing to re-run
    repo, _ = study
    run(["dvc", "repro"], repo)  # the workspace is the last experiment's, complete
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results and the team remote"], repo)
    run(["dvc", "push"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    assert (clone / "models" / "pretrained" / "seed1.pt").read_bytes() == (
        repo / "models" / "pretrained" / "seed1.pt").read_bytes()
    again = run(["dvc", "repro"], clone)
    assert "Running stage" not in again.stdout, again.stdout
    # experiments travel through Git (refs/exps: the clone's origin) with their outputs in the DVC remote
    run(["dvc", "exp", "pull", "--all-commits", "origin"], clone)
    listing = ["dvc", "exp", "list", "--all-commits", "--name-only"]
    names = sorted(run(listing, repo).stdout.split())
    assert names and sorted(run(listing, clone).stdout.split()) == names


def unpulled_clone(repo: Path, dest: Path) -> Path:
    """A user's `git clone` without `dvc pull` (its committed dvc.lock names outputs its cache lacks), on the
    same local mirror."""
    run(["git", "clone", "-q", str(repo), str(dest)], dest.parent)
    return dest


def test_a_fresh_clone_restores_stages_from_its_run_cache(study, tmp_path):
    # A user clones (no `dvc pull`): the committed dvc.lock names outputs this clone's cache lacks. After one
    # run, a second experiment from the commit (as `dvc queue` and `--temp` run them, on the committed lock)
    # must restore its split and pretraining from the run-cache, not fail on the lock's missing listings.
    repo, _ = study
    clone = unpulled_clone(repo, tmp_path / "fresh")
    unlike_the_lock = ["-S", "profile=tiny", "-S", "fraction=0.3", "-S", "pretext.epochs=2", "split@0", "pretrain@0"]
    first = run(["dvc", "exp", "run", *unlike_the_lock], clone)
    assert "Running stage 'pretrain@0'" in first.stdout, first.stdout
    run(["git", "checkout", "-q", "--", "."], clone)  # back to the commit's dvc.lock, as a queued run from it
    again = run(["dvc", "exp", "run", "--temp", *unlike_the_lock], clone)
    for stage in ("split@0", "pretrain@0"):
        assert f"Stage '{stage}' is cached" in again.stdout, again.stdout
    assert "Running stage" not in again.stdout, again.stdout


def test_queued_fractions_keep_the_workspace_pretraining(study, tmp_path):
    # At the committed lock's own params DVC 3.67 restores a stage from the lock's entry alone: in a clone
    # without the entry's outputs it re-runs the stage, although the run-cache holds that run. So a study
    # queued straight from a fresh clone pretrains at every fraction; the README's recipe runs the first
    # fraction in the workspace, and the queued ones start from that dvc.lock, whose outputs are cached.
    repo, _ = study
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["pretrain@0"]
    assert lock["params"]["params.yaml"]["pretext.epochs"] == 1  # the tiny profile: the lock matches it
    clone = unpulled_clone(repo, tmp_path / "fresh")
    # the lock's own pretext (the study command's last arm may have left rotation there)
    tiny = ["-S", "profile=tiny", "-S", f"pretext={lock['params']['params.yaml']['pretext.task']}", "pretrain@0"]
    first = run(["dvc", "exp", "run", "-S", "fraction=0.1", *tiny], clone).stdout  # the recipe's first step
    assert "Running stage 'pretrain@0'" in first, first
    workspace_lock = (clone / "dvc.lock").read_text()
    run(["git", "checkout", "-q", "--", "."], clone)
    queued_from_the_commit = run(["dvc", "exp", "run", "--temp", "-S", "fraction=0.5", *tiny], clone).stdout
    assert "Running stage 'pretrain@0'" in queued_from_the_commit, queued_from_the_commit  # DVC's limitation
    (clone / "dvc.lock").write_text(workspace_lock)
    queued_after_it = run(["dvc", "exp", "run", "--temp", "-S", "fraction=0.5", *tiny], clone).stdout
    assert "Stage 'pretrain@0' didn't change" in queued_after_it, queued_after_it
    assert "Running stage 'pretrain@0'" not in queued_after_it, queued_after_it
