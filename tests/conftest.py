import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# compile: auto keeps its verdicts in $XDG_CACHE_HOME/selfsup: the tests (and the stages they start) get their
# own, never the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="selfsup-tests-cache-")

# `python -m pytest -n auto` (the complete run, pytest-xdist from requirements-dev.txt) hands each worker whole
# modules (`--dist loadfile`: a module's fixtures are built once) in this file's order: test_pipeline.py first (one
# scenario, over half of the suite), then the modules without an end-to-end test, then the rest, so that while
# one worker runs the scenario the others take everything else. Without -n this is only the order tests run in.
LONGEST = "test_pipeline.py"


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "load":  # what -n alone asks for
        config.option.dist, config.option.loadscopereorder = "loadfile", False


def pytest_collection_modifyitems(config, items):
    e2e = {item.path.name for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: (item.path.name != LONGEST, item.path.name in e2e))
