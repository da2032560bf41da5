import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# compile: auto keeps its verdicts in $XDG_CACHE_HOME/selfsup: the tests (and the stages they start) get their
# own, never the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="selfsup-tests-cache-")
