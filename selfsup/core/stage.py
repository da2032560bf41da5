"""Running a stage script: every param checked first; on failure no half-written output and a one-line error."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from selfsup.core.files import remove_outputs
from selfsup.core.params import UserError


def run_stage(main: Callable[[], None], outputs: Iterable[Path | str] = (), check: bool = True) -> None:
    """Run a stage: check every param first (selfsup/config.py); on failure remove its outputs, print one
    line for a UserError, exit non-zero."""
    outputs = list(outputs)
    try:
        if check:
            from selfsup.config import check_files  # imported here: tools run stages' code unchecked
            check_files()
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
