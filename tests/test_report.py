"""The README's answer and docs/results.md are exactly what metrics/study.json (written by `python -m study report`)
holds; docs/pretexts.md's comparison is exactly metrics/methods.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfsup.core.params import UserError
from study.markdown import readme_section, splice
from study.report import BEGIN, END
from study.report_text import PENDING, render, render_answer

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_match_the_committed_study():
    readme = readme_section((ROOT / "README.md").read_text(), BEGIN, END)
    results = readme_section((ROOT / "docs" / "results.md").read_text(), BEGIN, END)
    path = ROOT / "metrics" / "study.json"
    if not path.exists():  # no study under protocol.yaml committed yet: both documents say so, and nothing else
        assert readme == results == PENDING
        return
    study = json.loads(path.read_text())
    assert results == render(study), "docs/results.md differs from metrics/study.json: run `python -m study report`"
    assert readme == render_answer(study), "README.md's answer differs from metrics/study.json: run `python -m study report`"
    for arm in study["arms"]:
        for init in ("scratch", "pretrained"):
            assert arm["tests"]["test_f1_macro"][init]["n"] == len(arm["seeds"])


def test_the_committed_record_is_one_run():
    # params.yaml is what the committed dvc.lock ran, at the protocol's profile, and
    # `dvc metrics show` (metrics/summary.json) is the primary endpoint of the committed study
    import yaml

    from study.protocol import load_protocol

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())

    def value(key: str):
        node = params
        for part in key.split("."):
            node = node[part]
        return node

    # params added after the locked runs, at the value that does what the locked code did (their code paths off)
    neutral = {"pretext.context": {"placement": "pair", "shift": 0.0}}
    checked = 0
    for name, stage in lock["stages"].items():
        for key, locked in stage.get("params", {}).get("params.yaml", {}).items():
            now = value(key)
            added = {k: now[k] for k in neutral.get(key, {}) if isinstance(locked, dict) and k not in locked}
            assert added == {k: neutral[key][k] for k in added}, f"params.yaml's {key} sets a param added since the lock"
            assert {k: v for k, v in now.items() if k not in added} == locked if added else now == locked, \
                f"params.yaml's {key} is not what dvc.lock's {name} ran"
            checked += 1
    assert checked > 20 and params["profile_name"] == load_protocol(ROOT / "protocol.yaml").profile
    path = ROOT / "metrics" / "study.json"
    if path.exists():
        primary = json.loads(path.read_text())["endpoints"][0]
        summary = json.loads((ROOT / "metrics" / "summary.json").read_text())
        assert (primary["pretext"], primary["fraction"]) == (params["pretext"]["task"], params["fraction"])
        assert summary["test_f1_gain"]["mean"] == pytest.approx(primary["difference"]["mean"], abs=1e-12)
        assert primary["n"] == len(params["seeds"])


def test_splice_replaces_only_the_section():
    readme = f"intro\n{BEGIN}\nold\n{END}\nrest\n"
    assert splice(readme, "new\n", BEGIN, END) == f"intro\n{BEGIN}\nnew\n{END}\nrest\n"
    with pytest.raises(Exception, match="markers"):
        splice("no markers", "x", BEGIN, END)


def test_readme_methods_table_matches_the_committed_comparison():
    from study import pretext_table as methods
    data = json.loads((ROOT / "metrics" / "methods.json").read_text())
    doc = (ROOT / "docs" / "pretexts.md").read_text()
    assert readme_section(doc, methods.BEGIN, methods.END) == methods.render(data), \
        "docs/pretexts.md's table differs from metrics/methods.json: run `python -m study pretexts`"
    assert [r["task"] for r in data["rows"]] == ["context", "rotation", "simclr", "reconstruction", "jigsaw"]
    for row in data["rows"]:  # every row's fine-tunes share the scratch runs
        assert row["finetune"]["scratch"] == data["rows"][0]["finetune"]["scratch"]


def test_dataset_name_says_what_the_data_is_never_where():
    from study.experiments import dataset_name
    assert dataset_name({"source": "cifar10", "digest": ""}) == "cifar10"
    digest = "sha256:" + "ab" * 32
    assert dataset_name({"source": "cifar10-jpeg", "digest": digest}) == "cifar10-jpeg (sha256:abababab)"
    # a study recorded before the data's location left the params: its source alone
    assert dataset_name({"source": "folder", "url": "", "path": "/d/cifar10-jpeg.tar.gz"}) == "folder"


def test_readme_is_a_front_page():
    # the answer and the two commands on the first screen, reference detail in docs/, every doc linked
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 160
    assert "pip install -r requirements.txt && dvc repro" in "\n".join(lines[:15])
    assert lines.index("## The question and the answer so far") < 25
    start = lines.index(BEGIN)
    assert start < 35  # the answer on the first screen: plain answers first, then the endpoints' table
    if (ROOT / "metrics" / "study.json").exists():
        assert lines[start + 1].startswith("- **Does context pretraining help at 10% of the labels**")
        assert next(n for n, line in enumerate(lines) if line.startswith("| context at 10% **(primary)**")) < 60
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in readme, f"README.md does not link docs/{doc.name}"


def _with_numerics(name: str, **changes) -> dict:
    record = {"precision": "bf16", "device": "cpu: AMD EPYC, 2 threads", "device_type": "cpu", "processes": 1,
              "compile": False, "torch": "2.14.1", "torchvision": "0.29.2"} | changes
    return {"name": name, "compare": {"numerics": {"finetune": [record], "pretrain": [record],
                                                   "linear_probe": [record | {"precision": "fp32"}]}}}


def test_the_report_refuses_runs_of_other_numerics_in_one_line():
    from study.experiments import check_numerics

    same = check_numerics([_with_numerics("a"), _with_numerics("b")])
    assert same["finetune"]["precision"] == "bf16" and same["linear_probe"]["precision"] == "fp32"
    with pytest.raises(UserError, match=r"experiment b has finetune runs whose numerics differ .*precision 'bf16' vs "
                                        r"'fp32'.*--mixed-numerics"):
        check_numerics([_with_numerics("a"), _with_numerics("b", precision="fp32")])
    with pytest.raises(UserError, match="experiment old has finetune runs that record no numerics"):
        check_numerics([_with_numerics("a"), {"name": "old", "compare": {}}])


def test_other_tools_use_the_shared_parts_not_the_reports_internals():
    import ast

    for tool in ("tune", "pretext_table"):
        tree = ast.parse((ROOT / "study" / f"{tool}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("study."):
                assert node.module not in ("study.report", "study.results"), f"study.{tool} imports {node.module}"
                assert not any(a.name.startswith("_") for a in node.names), f"study.{tool} imports a private name"


def test_tools_hold_none_of_the_studys_machinery():
    """tools/ keeps the bench, the roofline, the precision check and the docs generator; protocol, run, report,
    record, budgets and tuning are the study package's, behind one command."""
    assert sorted(p.stem for p in (ROOT / "tools").glob("*.py")) == ["__init__", "bench", "params_doc",
                                                                     "precision_check", "roofline"]
    from study.__main__ import COMMANDS
    assert set(COMMANDS) == {"plan", "run", "record", "report", "budgets", "tune", "pretexts"}


RETIRED = ROOT / "metrics" / "retired" / "study-7f37ca200fe4"  # the last study, its record kept whole


def test_rejudging_the_committed_study_reproduces_its_record(tmp_path, monkeypatch):
    """`python -m study report --rejudge` reads no experiment: metrics/study.json with its verdicts spoiled, judged
    again by its protocol, gives back the study.json, README answer and docs/results.md it was committed with
    (the committed study's; while the next has not run, the retired one's, whose documents it renders)."""
    import shutil

    from study import report
    source = ROOT if (ROOT / "metrics" / "study.json").exists() else None
    for name in ("metrics/study.json", "metrics/study_run.json", "protocol.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name if source else RETIRED / Path(name).name, tmp_path / name)
    committed = json.loads((tmp_path / "metrics" / "study.json").read_text())
    docs = {"README.md": render_answer(committed), "docs/results.md": render(committed)}
    for name, text in docs.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text() if source else f"intro\n{BEGIN}\n{text}{END}\n")
    expected = {name: (tmp_path / name).read_text() for name in ("metrics/study.json", *docs)}
    study = json.loads((tmp_path / "metrics" / "study.json").read_text())
    for e in study["endpoints"]:
        if not e["primary"]:  # an endpoint not run yet (a partial study) counts in the family with p = 1
            e["p_holm"] = 0.0
            if e["run"]:
                e["equivalence"] = e["equivalence"] | {"p_holm": 0.0, "equivalent": True}
    (tmp_path / "metrics" / "study.json").write_text(json.dumps(study))
    monkeypatch.chdir(tmp_path)
    report.main(["--rejudge"])
    for name, text in expected.items():
        assert (tmp_path / name).read_text() == text, name
