"""dvc.yaml tells the truth: every stage depends on every module it imports and declares the params it reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from selfsup.config import hardware_knobs

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
# read, deliberately not declared: a hardware knob must not invalidate results
HARDWARE = hardware_knobs()
PACKAGES = ("stages", "selfsup")  # the stage scripts and the library they call (tools/ holds no stage)


def local_imports(module: Path, seen: set[Path] | None = None) -> set[Path]:
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
        for name in names:
            path = ROOT / (name.replace(".", "/") + ".py")
            if not path.exists():  # a package
                path = ROOT / name.replace(".", "/") / "__init__.py"
            if path.exists() and path not in seen:
                seen.add(path)
                if path.relative_to(ROOT).as_posix() not in VALIDATION_ONLY:  # what it imports is checked, not run
                    local_imports(path, seen)
    return seen


def read_keys(modules: set[Path]) -> set[str]:
    from dataclasses import fields

    from selfsup.loop.training_stage import Recipe
    keys = set()
    for m in modules:
        text = m.read_text()
        keys |= set(re.findall(r'param\(params,\s*"([\w.]+)"', text))
        keys |= set(re.findall(r'= "(pretext\.\w+)"$', text, re.M))  # a task's section, read key by key
        for section in re.findall(r'Recipe\.read\(params,\s*"(\w+)"\)', text):  # a section's recipe keys
            keys |= {f"{section}.{f.name}" for f in fields(Recipe)}
    return keys


def resolved(stage: dict, task: str = "context") -> dict:
    """The stage with `${pretext.task}` resolved as DVC resolves it from params.yaml (the deps of one task)."""
    return yaml.safe_load(yaml.safe_dump(stage).replace("${pretext.task}", task).replace("${model.code}", "nets"))


def closure(script: Path, task: str = "context") -> set[Path]:
    """The local modules `script` runs: its imports, and the chosen task's module (loaded by name) with its own."""
    modules = {script} | local_imports(script)
    if ROOT / "selfsup" / "pretexts" / "__init__.py" in modules:
        task_module = ROOT / "selfsup" / "pretexts" / f"{task}.py"
        modules |= {task_module} | local_imports(task_module)
    return modules


def stages(task: str = "context"):
    for name, stage in DVC["stages"].items():
        stage = resolved(stage, task)
        script = ROOT / re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1).replace(".", "/")
        yield name, stage, Path(f"{script}.py")


# imported, deliberately not deps: it declares and checks params before a stage writes anything and cannot change
# an output, so adding a param or changing a default re-runs nothing by itself
VALIDATION_ONLY = {"selfsup/config.py"}
# imported, deliberately not a dep, but what it imports runs: the runner calls that check, then the stage's main
RUNNER = {"selfsup/stage.py"}
PACKAGE_MARKERS = {"stages/__init__.py", "selfsup/__init__.py"}  # docstrings only


def pretext_modules(task: str) -> set[str]:
    """The pretext package's modules a pretraining of `task` runs: the registry, the base, the task's own module and
    what it imports from the package (grid.py for context and jigsaw)."""
    from selfsup.pretexts import TASKS, task_class

    assert task in TASKS
    module = ROOT / "selfsup" / "pretexts" / f"{task_class(task).__module__.rsplit('.', 1)[1]}.py"
    return {p.relative_to(ROOT).as_posix() for p in {module} | local_imports(module)
            if p.is_relative_to(ROOT / "selfsup" / "pretexts")} | {"selfsup/pretexts/__init__.py"}


@pytest.mark.parametrize("task", ["context", "reconstruction", "rotation", "jigsaw", "simclr"])
def test_pretrain_depends_on_the_chosen_tasks_code_and_params_alone(task):
    stage = resolved(DVC["stages"]["pretrain"], task)
    deps = {d for d in stage["deps"] if d.startswith("selfsup/pretexts/")}
    shared = {"selfsup/pretexts/grid.py"}  # the patch grid of context and jigsaw: a dep of every pretraining
    assert pretext_modules(task) <= deps and deps - pretext_modules(task) <= shared, deps
    assert f"selfsup/pretexts/{task}.py" in deps
    others = {f"pretext.{t}" for t in ("context", "reconstruction", "rotation", "jigsaw", "simclr")} - {f"pretext.{task}"}
    assert not others & set(stage["params"]) and "pretext" not in stage["params"]


def test_every_imported_module_is_a_dep():
    for name, stage, script in stages():
        deps = set(stage["deps"])
        modules = closure(script)
        missing = {m.relative_to(ROOT).as_posix() for m in modules} - deps - PACKAGE_MARKERS - VALIDATION_ONLY - RUNNER
        missing = {m for m in missing if not any(m.startswith(d.rstrip("/") + "/") for d in deps)}  # dep folders
        assert not missing, f"stage {name} imports {missing} but does not list them as deps"


# finetune.py reads pretext.task only with --init pretrained: finetune_scratch must not depend on it (the scratch
# runs are shared by every pretext task)
# and the loop reads a fraction's fine-tune budget (fraction, finetune.epochs) only for the finetune recipe, never
# in a pretraining
NOT_READ_BY = {"finetune_scratch": {"pretext.task"}, "pretrain": {"fraction", "finetune.epochs"}}


def test_declared_params_are_exactly_those_read():
    for name, stage, script in stages():
        declared = set(stage.get("params", []))
        read = read_keys(closure(script)) - HARDWARE - NOT_READ_BY.get(name, set())
        covered = {k for k in read if any(k == d or k.startswith(d + ".") for d in declared)}
        assert covered == read, f"stage {name} reads {read - covered} without declaring them"
        unused = {d for d in declared if not any(k == d or k.startswith(d + ".") for k in read)}
        assert not unused, f"stage {name} declares {unused} but never reads them"


def test_stages_that_build_a_backbone_depend_on_the_code_that_builds_it():
    # model.code is derived from model.arch (selfsup.config.arch_code): nets/ for your own network there, so
    # editing it re-runs what uses it, and nothing there for a torchvision model
    from selfsup.config import arch_code

    for name, stage, script in stages():
        builds = ROOT / "selfsup" / "training" / "models.py" in local_imports(script)
        assert ("nets" in stage["deps"]) == builds, name  # ${model.code} resolved for a nets arch
        assert ("${model.code}" in DVC["stages"][name]["deps"]) == builds, name
    assert arch_code("nets.fast_cnn:half") == "nets" and arch_code("resnet18") == "selfsup/training"
    assert arch_code("mylab.nets:wide") == "mylab/nets.py"


def test_validation_only_code_is_no_dep():
    for name, stage, _ in stages():
        assert not (VALIDATION_ONLY | RUNNER) & set(stage["deps"]), f"stage {name} depends on validation-only code"


def test_no_dep_is_code_the_stage_does_not_run():
    # exact deps: a module the stage never imports cannot change its outputs, so it must not re-run it; a package
    # is a dep only where the stage runs every module in it
    for name, stage, script in stages():
        code = {m.relative_to(ROOT).as_posix() for m in closure(script)}
        for dep in stage["deps"]:
            if dep.endswith(".py"):
                assert dep in code, f"stage {name} depends on {dep} but never imports it"
            elif dep.startswith(("selfsup/", "stages/")):
                package = {p.relative_to(ROOT).as_posix() for p in (ROOT / dep).rglob("*.py")} - PACKAGE_MARKERS
                unused = {m for m in package - code if not m.endswith("/__init__.py")}
                assert not unused, f"stage {name} depends on {dep} but never runs {sorted(unused)}"
            elif dep == "nets":
                assert "selfsup/training/models.py" in code, f"stage {name} depends on {dep} but never uses it"


def test_stage_scripts_are_apart_from_the_library_and_the_tools():
    scripts = {re.search(r"python -m stages\.(\w+)", s["cmd"]).group(1) for s in DVC["stages"].values()}
    assert {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__"} == scripts
    for tool in (ROOT / "tools").glob("*.py"):  # no stage imports a tool
        for _, _, script in stages():
            assert f"tools.{tool.stem}" not in script.read_text()


@pytest.mark.parametrize("tool", sorted(f"{d}.{p.stem}" for d in ("tools", "study") for p in (ROOT / d).glob("*.py")
                                         if p.stem != "__init__"))
def test_every_tool_imports(tool):
    # the tools and the study's modules import the library's names, which a move or a rename must not leave dangling
    import importlib

    importlib.import_module(tool)
