"""What every stage needs: params, devices, seeding, atomic writes and one-line user errors."""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

PARAMS_FILE = Path("params.yaml")


class UserError(Exception):
    """A problem the user can fix (a param, a file); printed as one line, never as a traceback."""


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path} not found: run the stage from the repository root")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise UserError(f"{path} must hold a mapping of params")
    return params


def param(params: dict[str, Any], key: str, kind: type | tuple[type, ...] | None = None, *,
          choices: Iterable[Any] | None = None, low: float | None = None, high: float | None = None,
          low_open: bool = False) -> Any:
    """Read a dotted key and check it; any violation is a UserError naming the key and what is allowed. With
    no rules given, the key's rules in stages/schema.py apply: one place says what each param may be."""
    if kind is None and choices is None and low is None and high is None:
        from stages.schema import spec  # imported here: schema builds on this module
        rules = dict(spec().get(key, {}))
        if rules:
            return param(params, key, rules.pop("kind"), **rules)
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"param '{key}' is missing from params.yaml: add it (see README, 'Params')")
        node = node[part]
    value = node
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise UserError(f"param '{key}' is {value!r}: expected {names}")
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise UserError(f"param '{key}' is {value!r}: choose one of {', '.join(map(str, choices))}")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise UserError(f"param '{key}' is {value!r}: must be {bound}")
    if high is not None and value > high:
        raise UserError(f"param '{key}' is {value!r}: must be <= {high}")
    return value


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is absent is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        try:  # what CUDA itself says: no driver, a driver too old for this torch, no device visible...
            torch.cuda.init()
            reason = "no CUDA GPU is visible"
        except Exception as e:
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"param 'device' is 'cuda' but CUDA cannot be used ({reason}): fix the driver, or use "
                        f"device=auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("param 'device' is 'mps' but MPS is not available: use device=auto or cpu")
    return torch.device(name)


def configure_device(device: torch.device) -> torch.device:
    """The backend settings every training run uses: on CUDA, cuDNN autotuning and TF32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def describe_device(device: torch.device) -> str:
    """One line for reports: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device.type}: {model}, {torch.get_num_threads()} threads"


def announce(stage: str, device: torch.device, precision: str) -> None:
    """The line every training stage prints first: where it runs, in what precision, on how many threads."""
    where = describe_device(device)
    threads = "" if device.type == "cpu" else f", {torch.get_num_threads()} CPU threads"
    print(f"{stage}: {where}{threads}, precision {precision}", file=sys.stderr, flush=True)


def device_from_params(params: dict[str, Any]) -> torch.device:
    return configure_device(resolve_device(param(params, "device")))


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):  # mkstemp makes 0600 files; give the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(obj: Any, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(array: np.ndarray, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def save_torch(obj: Any, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def remove_outputs(outputs: Iterable[Path | str]) -> None:
    for out in map(Path, outputs):
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()


def run_stage(main: Callable[[], None], outputs: Iterable[Path | str] = (), check: bool = True) -> None:
    """Run a stage: check every param first (stages/schema.py); on failure remove its outputs, print one
    line for a UserError, exit non-zero."""
    outputs = list(outputs)
    try:
        if check:
            from stages.schema import check_params  # imported here: schema builds on this module
            check_params(load_params())
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


def device_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on `device`, so random augmentation numbers are drawn where the images are."""
    return torch.Generator(device=device).manual_seed(seed)
