"""python -m study <command> [options]: the study's one command.

    python -m study plan       # the arms done and left, the time left, each endpoint's power
    python -m study run        # every arm of protocol.yaml as a DVC experiment, resumable, then the report
    python -m study record     # commit the finished study: one commit per arm, the primary's last, then the report
    python -m study report     # metrics/study.json, the figures, docs/results.md and README's answer
    python -m study budgets    # fine-tune budgets chosen on validation by doubling (metrics/budgets.json)
    python -m study tune       # recipe sweeps judged on validation (metrics/tuning.json)
    python -m study pretexts   # the pretexts compared (docs/pretexts.md)

`python -m study <command> -h` lists each command's options.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable

# command -> (module, the arguments it stands for)
COMMANDS = {
    "plan": ("study.run", ["--plan"]),
    "run": ("study.run", []),
    "record": ("study.run", ["--record"]),
    "report": ("study.report", []),
    "budgets": ("study.budgets", []),
    "tune": ("study.tune", []),
    "pretexts": ("study.pretext_table", []),
}


def take_ctrl_c() -> None:
    """Stop on Ctrl-C (SIGINT) however the command was started: a background job of a script (`nohup ... &`
    without job control) starts with SIGINT ignored, and what it runs (`dvc exp run` and its stages, a budget
    search's fine-tunes) would ignore it too; `kill -INT` to the process group would then stop nothing."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    module, implied = COMMANDS[argv[0]]
    sys.argv = [f"python -m study {argv[0]}", *implied, *argv[1:]]
    run_command(importlib.import_module(module).cli)


def run_command(cli: Callable[[], None]) -> None:
    """`cli()` with Ctrl-C taken back; stopped by it (what was running has said where it stopped), exit 130 with
    one line, not a traceback."""
    take_ctrl_c()
    try:
        cli()
    except KeyboardInterrupt:
        print("study: stopped by Ctrl-C", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
