"""The benchmark runs all three data paths through the engine and reports comparable figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selfsup.core.dataset import Dataset, save_dataset
from tests.synthetic import CLASSES, images
from tools.bench import CODE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_bench_reports_every_path(tmp_path):
    labels = np.arange(64) % 10
    save_dataset(Dataset(images(labels, 0), labels, images(labels[:20], 1), labels[:20], CLASSES), tmp_path / "ds",
                 "synthetic")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tools.bench", "--arch", "nets.small_cnn:build", "--stem", "imagenet",
                           "--batch-size", "16", "--steps", "2", "--warmup", "1", "--repeats", "2", "--workers", "1",
                           "--device", "cpu", "--dataset", str(tmp_path / "ds"), "--json", str(out),
                           "--pretext", "context", "rotation", "--streamed"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["finetune"]) >= {"model_only", "ours", "usual", "streamed"}
    assert set(report["pretext"]) == {"context", "rotation"}
    steps = [(report["finetune"], "images")] + [(r, "examples") for r in report["pretext"].values()]
    for result, unit in steps:
        assert set(result) >= {"model_only", "ours"}
        limit = result["model_only"]
        assert limit["ratio_to_model_only"] == 1.0
        assert len(limit[f"{unit}_per_s_runs"]) == 2
        for name, r in result.items():
            if isinstance(r, dict):
                assert r[f"{unit}_per_s"] > 0, name
    # ratios are paired within each round, then the median over rounds
    ft = report["finetune"]
    ours, usual, limit = ft["ours"], ft["usual"], ft["model_only"]
    for name, ref in (("usual", usual), ("model_only", limit)):
        rounds = [a / b for a, b in zip(ours["images_per_s_runs"], ref["images_per_s_runs"])]
        assert ours[f"ratio_to_{name}_runs"] == rounds
        assert ours[f"ratio_to_{name}"] == sum(rounds) / 2  # the median of two rounds
    for result, unit in steps:  # streaming is measured against the images held on the device, round by round
        rounds = [a / b for a, b in zip(result["streamed"][f"{unit}_per_s_runs"], result["ours"][f"{unit}_per_s_runs"])]
        assert result["streamed"]["ratio_to_ours_runs"] == rounds
    for word in ("ours", "usual", "streamed", "pretext rotation"):  # the table
        assert word in proc.stdout
    # the measured code: HEAD, marked when the working tree differs from it
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *CODE], cwd=ROOT).returncode != 0
        assert report["commit"] == head.stdout.strip() + ("-dirty" if dirty else "")


@pytest.mark.e2e
def test_bench_measures_the_precision_and_layout_asked_for(tmp_path):
    labels = np.arange(32) % 10
    save_dataset(Dataset(images(labels, 0), labels, images(labels[:10], 1), labels[:10], CLASSES), tmp_path / "ds",
                 "synthetic")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tools.bench", "--arch", "nets.small_cnn:build", "--stem",
                           "imagenet", "--batch-size", "8", "--steps", "1", "--warmup", "0", "--repeats", "1",
                           "--no-usual", "--pretext", "--device", "cpu", "--precision", "bf16", "--memory-format",
                           "contiguous", "--dataset", str(tmp_path / "ds"), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["precision"] == "bf16" and report["channels_last"] is False and report["pretext"] == {}
    assert "precision=bf16, channels_last=False" in proc.stdout


@pytest.mark.e2e
def test_bench_refuses_bad_arguments():
    proc = subprocess.run([sys.executable, "-m", "tools.bench", "--steps", "0"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: --batch-size, --steps and --repeats must be >= 1; "
                                                "--warmup and --workers >= 0"]
