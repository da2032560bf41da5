"""The library's floors point down: `selfsup.core` at the bottom, then `training` (with the data readers and the
analysis), then the routines a stage runs (`pretexts`, `loop`, the probes), then the param declarations
(`config`) and the stage runner (`stage`) on top. No module imports one on a higher floor, not even for a
constant, and no imports go round in a circle (module-level and function-level imports alike)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = [  # (floor, module-name prefixes), bottom first
    (0, ("selfsup.core",)),
    (1, ("selfsup.training", "selfsup.sources", "selfsup.subsets", "selfsup.analysis")),
    (2, ("selfsup.pretexts", "selfsup.loop", "selfsup.linear_eval", "selfsup.finetune")),
    (3, ("selfsup.config",)),
    (4, ("selfsup.stage",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (ROOT / "selfsup").rglob("*.py")}


def floor(name: str) -> int:
    if name == "selfsup":
        return 0
    for level, prefixes in FLOORS:
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{name} is on no floor: add it to FLOORS")


def imports(name: str) -> set[str]:
    """The selfsup modules `name` imports, wherever in the file."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfsup"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("selfsup")}
    return {m for m in out if m in MODULES and m != name}


def test_every_import_points_down_or_along_its_floor():
    upward = [f"{m} (floor {floor(m)}) imports {i} (floor {floor(i)})"
              for m in sorted(MODULES) for i in sorted(imports(m)) if floor(i) > floor(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = {m: imports(m) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
