"""What every stage script runs: params.yaml and hardware.yaml checked against their declarations
(selfsup/config.py) before anything is read or written, then the stage's main; on failure no half-written output
and a one-line error. The top floor: it imports the declarations, which import the library below them.

Like selfsup/config.py it cannot change an output, so no stage declares it as a dependency."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from selfsup.config import check_files
from selfsup.core import stage as runner


def run_stage(main: Callable[[], None], outputs: Iterable[Path | str] = ()) -> None:
    """The training stages pass `selfsup.training.distributed.parallel(main)`: with the param `nproc` > 1 the
    stage is started again under torchrun."""
    runner.run_stage(main, outputs, check=check_files)
