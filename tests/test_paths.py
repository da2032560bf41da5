"""A stage run on its own with an input missing names the file and the stage that makes it, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup.core import paths
from selfsup.core.params import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path,stage", [
    (paths.validation(3), "split@3"), (paths.labelled(0), "split@0"), (paths.pretrained(2), "pretrain@2"),
    (paths.DATASET / "meta.json", "download"), (paths.probe_result(1), "linear_probe@1"),
    (paths.finetune_log("pretrained", 4) / "metrics.json", "finetune_pretrained@4"),
    (paths.finetuned("scratch", 0), "finetune_scratch@0"), (paths.pretrain_log(2) / "plots", "pretrain@2"),
])
def test_each_input_names_the_stage_that_makes_it(path, stage):
    assert paths.producer(path) == stage


def test_a_missing_split_is_one_line_naming_file_and_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^data/splits/seed0/validation.npy not found: it is made by stage split@0; "
                                        r"run `dvc repro split@0` first$"):
        paths.load_indices(paths.validation(0))


@pytest.mark.e2e
def test_a_fine_tune_alone_without_its_split_says_so(tmp_path):
    # a workspace with params and a dataset but no split: the stage names the file and the stage, no traceback
    from selfsup.core.dataset import Dataset, save_dataset
    from tests.synthetic import images

    import numpy as np

    for name in ("params.yaml", "hardware.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    labels = np.arange(40) % 10
    save_dataset(Dataset(images(labels, 0), labels, images(labels, 1), labels, [f"c{i}" for i in range(10)]),
                 tmp_path / paths.DATASET, "synthetic")
    proc = subprocess.run([sys.executable, "-m", "stages.finetune", "--init", "scratch", "--seed", "0"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("error: data/splits/seed0/validation.npy not found: it is made by "
                                                    "stage split@0; run `dvc repro split@0` first")
    assert "Traceback" not in proc.stderr
