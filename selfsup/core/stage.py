"""Running a stage script or a tool: on failure no half-written output and a one-line error.

This floor knows nothing of the params' declarations: a stage passes its check (selfsup/stage.py does, with
selfsup.config.check_files); a tool runs without one."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from selfsup.core.files import remove_outputs
from selfsup.core.params import UserError


def run_stage(main: Callable[[], None], outputs: Iterable[Path | str] = (),
              check: Callable[[], None] | None = None) -> None:
    """Run `check` (if any), then `main`; on failure remove `outputs`, print one line for a UserError, exit
    non-zero."""
    outputs = list(outputs)
    try:
        if check is not None:
            check()
        main()
    except UserError as e:
        _remove_on_rank0(outputs)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except BaseException:
        _remove_on_rank0(outputs)
        raise


def _remove_on_rank0(outputs: list[Path | str]) -> None:
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 owns the outputs
        remove_outputs(outputs)
