"""The README's results section is exactly what metrics/study.json (written by `python -m stages.report`) holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.report import BEGIN, END, readme_section, render, splice

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_match_the_committed_study():
    study = json.loads((ROOT / "metrics" / "study.json").read_text())
    assert readme_section((ROOT / "README.md").read_text()) == render(study), \
        "README.md's results differ from metrics/study.json: run `python -m stages.report`"
    for fraction in study["fractions"]:
        for init in ("scratch", "pretrained"):
            assert fraction["tests"]["best_f1_macro"][init]["n"] == len(study["seeds"])


def test_splice_replaces_only_the_section():
    readme = f"intro\n{BEGIN}\nold\n{END}\nrest\n"
    assert splice(readme, "new\n") == f"intro\n{BEGIN}\nnew\n{END}\nrest\n"
    with pytest.raises(Exception, match="markers"):
        splice("no markers", "x")


def test_readme_methods_table_matches_the_committed_comparison():
    from stages import methods
    data = json.loads((ROOT / "metrics" / "methods.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert readme_section(readme, methods.BEGIN, methods.END) == methods.render(data), \
        "README.md's pretext table differs from metrics/methods.json: run `python -m stages.methods`"
    assert [r["task"] for r in data["rows"]] == ["context", "rotation", "simclr", "reconstruction", "jigsaw"]
    for row in data["rows"]:  # every row's fine-tunes share the scratch runs
        assert row["finetune"]["scratch"] == data["rows"][0]["finetune"]["scratch"]


def test_dataset_name_is_never_empty():
    # the default data.url is empty: the report names the official archive, not ""
    from stages.report import dataset_name
    assert dataset_name({"source": "cifar10", "url": "", "path": ""}) == "cifar-10-python.tar.gz"
    assert dataset_name({"source": "cifar10", "url": "file:///m/tiny.tar.gz", "path": ""}) == "tiny.tar.gz"
    assert dataset_name({"source": "folder", "url": "", "path": "/d/cifar10-jpeg.tar.gz"}) == "cifar10-jpeg.tar.gz"
    assert dataset_name({"source": "stl10", "url": "", "path": ""}) == "stl10_binary.tar.gz"
