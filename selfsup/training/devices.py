"""Where a run computes and how it is seeded: device choice and description, backend settings, RNGs."""

from __future__ import annotations

import importlib.util
import platform
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.core.params import UserError, param


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


def numerics(device: torch.device, precision: str, processes: int, compiled: bool) -> dict[str, object]:
    """What can change a run's numbers without being a param that re-runs it: the resolved precision, the device
    and its name, the process count, compile, and the torch and torchvision versions. Every training run and
    probe records it; the report refuses to pool runs whose records differ (study/report.py)."""
    return {"precision": precision, "device": describe_device(device), "device_type": device.type,
            "processes": processes, "compile": bool(compiled), "torch": torch.__version__,
            "torchvision": torchvision_version()}


def torchvision_version() -> str:
    """torchvision's `__version__` (with its local tag, e.g. 0.29.2+cu132, as the records hold it), read from its
    version.py: importing torchvision loads its models and ops (about 1 s of a stage's start) for one string."""
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        version = Path(spec.origin).with_name("version.py") if spec and spec.origin else None
        found = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", version.read_text(), re.M) \
            if version and version.is_file() else None
        if found:
            return found.group(1)
    import torchvision
    return torchvision.__version__


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


def device_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on `device`, so random augmentation numbers are drawn where the images are."""
    return torch.Generator(device=device).manual_seed(seed)
