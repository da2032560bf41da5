"""`precision: auto` on a CPU with bf16 instructions: bf16 only where a training step measured faster in it, on
this machine and network.

bf16 instructions do not make bf16 faster everywhere: on a 2-core Zen 5 the fine-tune ran at 3,256 images/s in
bf16 against 4,896 in fp32, on a 2-core Xeon with AMX at 5,599 against 3,347 (docs/speed.md). So, like
`compile: auto` (compile_choice.py), `auto` measures: a classifier built from the run's network (`model.arch`,
`model.stem`) takes training steps on a batch of `BATCH` images of the run's size, in fp32 and in bf16
(each in its own layout, as a run would train), warmed up, then timed in turns; bf16 wins when its fastest
round is at least `compile_choice.MARGIN` faster. The measurement trains a copy at learning rate 0, so nothing
of it reaches a run. The verdict is kept per machine in `$XDG_CACHE_HOME/selfsup/precision.json`, keyed by
the device's description, torch version, network and example shape and batch, so every stage of a study on
that machine (pretraining and fine-tunes of one network alike) reads the same one; delete the file to measure
again. Every run records the precision it resolved to in its numerics.
"""

from __future__ import annotations

import copy
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from selfsup.training import compile_choice
from selfsup.training.devices import describe_device
from selfsup.training.engine import Trainer, sgd
from selfsup.training.models import Classifier, build_extractor

CANDIDATES = ("fp32", "bf16")
BATCH = 128  # the measured batch, the same for every stage (a param would make the verdict a stage input)


def cpu_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's vendor, family, model and stepping: two CPUs sold under one name (an "AMD EPYC" of one
    generation or the next) get verdicts of their own."""
    try:
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in
                                                    cpuinfo.read_text().split("\n\n")[0].splitlines() if ":" in line)}
    except OSError:
        return platform.processor() or platform.machine()
    return "{} family {} model {} stepping {}".format(*(fields.get(k, "?") for k in ("vendor_id", "cpu family", "model",
                                                                                  "stepping")))


def cache_key(arch: str, stem: str, image_size: int, batch_size: int, device: torch.device) -> dict[str, str]:
    return {"device": f"{describe_device(device)} ({cpu_id()})" if device.type == "cpu" else describe_device(device),
            "torch": torch.__version__, "network": f"{arch} ({stem} stem)",
            "example": f"3x{image_size}x{image_size} float", "batch": str(batch_size)}


def step_seconds(arch: str, stem: str, image_size: int, classes: int, batch_size: int, device: torch.device
                 ) -> dict[str, float]:
    """Fastest seconds per training step of the classifier in each precision of `CANDIDATES` (eager, learning
    rate 0), timed in turns after a warm-up."""
    torch.manual_seed(0)
    extractor, feat_dim = build_extractor(arch, stem)
    model = Classifier(extractor, feat_dim, classes)
    inputs = torch.randn(batch_size, 3, image_size, image_size, device=device)
    targets = torch.randint(0, classes, (batch_size,), device=device)
    copies = {p: copy.deepcopy(model) for p in CANDIDATES}
    trainers = {p: Trainer(m, sgd(m, 0.0, 0.0), 1, 0, device, precision=p) for p, m in copies.items()}  # lr 0
    for t in trainers.values():
        t.train_model.train()

    def timed(trainer: Trainer, steps: int, seconds: float) -> float:
        start, done = time.perf_counter(), 0
        while done < steps or time.perf_counter() - start < seconds:
            trainer._step(trainer.train_model, trainer.optimizer, inputs, targets, None)
            done += 1
        trainer._sync()
        return (time.perf_counter() - start) / done

    for t in trainers.values():
        timed(t, compile_choice.WARMUP_STEPS, 0.0)
    rounds: dict[str, list[float]] = {p: [] for p in CANDIDATES}
    for _ in range(compile_choice.ROUNDS):
        for p, t in trainers.items():
            rounds[p].append(timed(t, compile_choice.TIMED_STEPS,
                                   compile_choice.TIMED_SECONDS / compile_choice.ROUNDS))
    return {p: min(r) for p, r in rounds.items()}


def bf16_faster(arch: str, stem: str, image_size: int, classes: int, batch_size: int,
                device: torch.device, announce: bool = True) -> Callable[[], bool]:
    """What `engine.resolve_precision` asks on a CPU with bf16 instructions: this machine's verdict for the
    network, read from the cache or measured (and cached) on first use."""
    def ask() -> bool:
        key = cache_key(arch, stem, image_size, batch_size, device)
        verdict = compile_choice.read_verdict(key, "precision")
        if verdict is None:
            seconds = step_seconds(arch, stem, image_size, classes, batch_size, device)
            verdict = {"key": key, "fp32_step_s": seconds["fp32"], "bf16_step_s": seconds["bf16"],
                       "bf16": seconds["bf16"] < (1 - compile_choice.MARGIN) * seconds["fp32"]}
            compile_choice.write_verdict(verdict, "precision")
        if announce:
            print(f"precision: auto -> {'bf16' if verdict['bf16'] else 'fp32'} (a training step "
                  f"{verdict['fp32_step_s']:.3f} s in fp32, {verdict['bf16_step_s']:.3f} s in bf16, on this machine and "
                  f"network; {compile_choice.cache_path('precision')})", file=sys.stderr, flush=True)
        return bool(verdict["bf16"])
    return ask
