"""`compile: auto`: torch.compile the training forward where it was measured faster, for this device,
network, example shape and precision.

torch.compile is not faster everywhere: on a 2-core AMD EPYC Zen 4 in bf16 it trained `nets.fast_cnn:half`
15 % faster, on a 2-core Zen 3 in fp32 15 % slower (and it costs about 20 s of compiling per network on
such a CPU; docs/speed.md). So `auto` measures. The first run that needs a verdict measures it on its own
model and first batch: eager training steps and the same steps through torch.compile (whose first call
compiles), both warmed up, then timed in turns; the optimiser they use has a learning rate of 0 and the
BatchNorm statistics and RNG state are restored after, so the run trains exactly as if nothing had been
measured. Compile wins when its fastest round is at least `MARGIN` faster than eager's. The verdict is
kept per machine in `$XDG_CACHE_HOME/selfsup/compile.json`
(`~/.cache/...`), keyed by the device's description, torch version, precision, the network's structure and
an example's shape, dtype and layout (not the batch size: every run of a network then gets one verdict,
whatever its fraction's batch), so every later run of that network there (each seed, each experiment)
reads it instead of measuring; delete the file to measure again. The time measuring and compiling takes is
part of the stage's wall time and its `compile` share; each run records what `auto` resolved to in its
numerics.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

MARGIN = 0.05      # compiled steps must be this much faster than eager ones
WARMUP_STEPS = 2   # untimed steps before each timing (the compiled module's first call compiles)
TIMED_STEPS = 5    # at least this many timed steps per mode and round...
TIMED_SECONDS = 1.0  # ...and at least this long per mode, over its rounds, so short steps are timed over many
ROUNDS = 2         # eager and compiled timed in turns, this many times each; each mode's fastest round counts
Step = Callable[[nn.Module, torch.optim.Optimizer], None]  # one training step of a module on the measured batch


def cache_path(name: str = "compile") -> Path:
    """This machine's verdicts of one kind (compile, precision): $XDG_CACHE_HOME/selfsup/<name>.json."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "selfsup" / f"{name}.json"


def cache_key(model: nn.Module, inputs: torch.Tensor, device_description: str, precision: str) -> dict[str, str]:
    """What a verdict holds for: the device, torch, precision, the network (its structure, by hash) and an
    example (shape without the batch size, dtype, layout)."""
    layout = "channels_last" if inputs.ndim == 4 and inputs.is_contiguous(memory_format=torch.channels_last) else \
        "strided" if not inputs.is_contiguous() else "contiguous"
    return {"device": device_description, "torch": torch.__version__, "precision": precision,
            "network": f"{type(model).__name__}:{hashlib.sha1(repr(model).encode()).hexdigest()[:12]}",
            "example": f"{tuple(inputs.shape[1:])} {str(inputs.dtype).removeprefix('torch.')} {layout}"}


def read_verdict(key: dict[str, str], name: str = "compile") -> dict | None:
    try:
        entries = json.loads(cache_path(name).read_text())
    except (OSError, ValueError):
        return None
    return next((e for e in entries if isinstance(e, dict) and e.get("key") == key), None)


def write_verdict(entry: dict, name: str = "compile") -> None:
    """Add (or replace) one verdict, atomically: a run reading the file never sees half of it."""
    path = cache_path(name)
    try:
        entries = [e for e in json.loads(path.read_text()) if isinstance(e, dict) and e.get("key") != entry["key"]]
    except (OSError, ValueError):
        entries = []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(entries + [entry], indent=1) + "\n")
    tmp.replace(path)


def seconds_per_step(module: nn.Module, optimizer: torch.optim.Optimizer, step: Step, sync: Callable[[], None],
                     at_least: int, seconds: float) -> float:
    """Seconds per step of `module` over at least `at_least` steps and `seconds`."""
    start, steps = time.perf_counter(), 0
    while steps < at_least or time.perf_counter() - start < seconds:
        step(module, optimizer)
        steps += 1
        if steps >= at_least:
            sync()
    return (time.perf_counter() - start) / steps


def measure(model: nn.Module, train_model: nn.Module, step: Step, sync: Callable[[], None]) -> tuple[dict, nn.Module]:
    """Time `train_model` (the model, or its DDP wrapper) eager and compiled on `step`; return the figures and
    the compiled module (to train with, if it won: it is compiled already). Both are warmed up first (the
    compiled one's first call compiles), then timed in turns, `ROUNDS` times each, and each mode's fastest
    round counts: timing eager first from a cold start once made it look 30 % slower than it trains, and
    turned compile on where it was slower. Weights never change (lr 0); buffers (BatchNorm statistics) and
    the RNG state are restored at the end."""
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = copy.deepcopy({k: v for k, v in model.state_dict().items() if k not in dict(model.named_parameters())})
    rng = torch.get_rng_state()
    optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9, nesterov=True)  # the cost of a step, no update
    compiled_module = torch.compile(train_model)
    seconds_per_step(train_model, optimizer, step, sync, WARMUP_STEPS, 0.0)
    start = time.perf_counter()
    seconds_per_step(compiled_module, optimizer, step, sync, WARMUP_STEPS, 0.0)
    compiling = time.perf_counter() - start
    eager, compiled = [], []
    for _ in range(ROUNDS):
        eager.append(seconds_per_step(train_model, optimizer, step, sync, TIMED_STEPS, TIMED_SECONDS / ROUNDS))
        compiled.append(seconds_per_step(compiled_module, optimizer, step, sync, TIMED_STEPS, TIMED_SECONDS / ROUNDS))
    model.load_state_dict(buffers, strict=False)
    for p in params:
        p.grad = None
    torch.set_rng_state(rng)
    return {"eager_step_s": min(eager), "compiled_step_s": min(compiled), "first_compiled_steps_s": compiling,
            "compile": min(compiled) < (1 - MARGIN) * min(eager)}, compiled_module
