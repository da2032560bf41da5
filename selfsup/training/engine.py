"""The one training engine shared by pretraining and fine-tuning.

A `Trainer` owns a model, its optimiser, a per-step learning-rate schedule and a criterion (outputs,
targets) -> (mean loss, summed score): cross-entropy and hits by default, a pretext task's own otherwise.
`train_epoch` consumes (inputs, targets) batches that are already on the device, sums loss and score on the
device (no host sync per step), and reports images/s through tqdm; `predict` runs large no-grad batches. The
`precision` param picks the autocast dtype (`resolve_precision`: bf16 on CUDA GPUs that have it, fp16 with a
gradient scaler on older ones; on a CPU bf16 where it has bf16 instructions and a training step measured
faster in it, else fp32); losses, logits and
features leave in fp32. Image batches reach the network channels_last on CUDA and CPUs (`batch_channels_last`);
models are channels_last on CUDA and with bf16 on a CPU (`channels_last`). A loss that turns NaN or Inf stops
the run with a message, not garbage.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from selfsup.training import compile_choice
from selfsup.training.devices import describe_device
from selfsup.training.distributed import Dist, all_sum, gather_in_order, sync_batchnorm
from selfsup.core.params import UserError

Batch = tuple[torch.Tensor, torch.Tensor]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CHECK_EVERY = 25  # steps between checks that the loss is still finite
ESTIMATE_AFTER = 5  # steps timed before a `slow_hint` warning estimates the training time
Criterion = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def classification_criterion(label_smoothing: float = 0.0) -> Criterion:
    """Cross-entropy (mean over the batch) and the number of correct top-1 predictions."""
    def criterion(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
        return loss, (logits.detach().argmax(1) == targets).sum()
    return criterion


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to zero at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def sgd(model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Nesterov SGD; no weight decay on biases and normalisation weights."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=True)


class Trainer:
    """Trains `model` in place. With `dist.world > 1` (torchrun) the model is wrapped in
    DistributedDataParallel with synced BatchNorm, and every batch it receives is this rank's share. With
    `compile=True` the training forward runs through torch.compile; with "auto" where that was measured
    faster (selfsup/training/compile_choice.py), decided at the first batch; `compiled` says which (None
    until then), `compile_seconds` how long measuring and compiling took. `criterion` defaults to
    cross-entropy (with `label_smoothing`) scored by top-1 hits."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int,
                 warmup_steps: int, device: torch.device, label_smoothing: float = 0.0,
                 dist: Dist = Dist(), compile: bool | str = False, criterion: Criterion | None = None,
                 precision: str = "fp32", slow_hint: str | None = None, memory_format: str = "auto"):
        self.device = device
        # "auto": the model channels_last where the device wants it (`channels_last`), batches channels_last
        # where `batch_channels_last` says; an explicit layout is both's (the benchmark compares them)
        self.channels_last = (channels_last(device, precision) if memory_format == "auto"
                              else memory_format == "channels_last")
        self.batch_format = (torch.channels_last if (batch_channels_last(device) if memory_format == "auto"
                                                     else memory_format == "channels_last")
                             else torch.contiguous_format)
        self.total_steps = total_steps
        self.slow_hint = slow_hint  # printed once, after ESTIMATE_AFTER steps, with the estimated training time
        self.precision = precision
        self.dist = dist
        self.model = model.to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.train_model: nn.Module = self.model
        if dist.world > 1:
            self.model = sync_batchnorm(self.model, device)
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        # "auto" is resolved at the first batch (`_resolve_compile`); with several processes it is off, as
        # compile=true is refused there (config.Hardware)
        self.compiled: bool | None = (None if dist.world == 1 else False) if compile == "auto" else bool(compile)
        self.compile_verdict: dict | None = None  # what "auto" measured or read
        self.compile_seconds = 0.0
        self._compiling = bool(self.compiled)  # the next step through the compiled module compiles it
        if self.compiled:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))
        self.criterion = criterion or classification_criterion(label_smoothing)

    def autocast(self):
        return autocast(self.device, self.precision)

    def state_dict(self) -> dict:
        """Model, optimiser and schedule: what a resume checkpoint needs from the trainer."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # moves the state to the parameters' device
        self.scheduler.load_state_dict(state["scheduler"])

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return in_layout(x, self.batch_format)

    def _step(self, module: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
              targets: torch.Tensor, scaler: torch.amp.GradScaler | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step of `module` on a batch; the loss and the criterion's score, on the device."""
        with self.autocast():
            outputs = module(self._layout(inputs))
            loss, score = self.criterion(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss, score

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _resolve_compile(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """compile: auto: this machine's verdict for this network and batch, measured on this batch if there is
        none yet (selfsup/training/compile_choice.py); the model's weights and statistics are left as they were."""
        key = compile_choice.cache_key(self.model, self._layout(inputs), describe_device(self.device), self.precision)
        verdict = compile_choice.read_verdict(key)
        if verdict is None:
            figures, compiled = compile_choice.measure(
                self.model, self.train_model, lambda m, opt: self._step(m, opt, inputs, targets, None), self._sync)
            verdict = {"key": key, **figures}
            compile_choice.write_verdict(verdict)
            if verdict["compile"]:
                self.train_model = compiled  # compiled while measuring
        elif verdict["compile"]:
            self.train_model = torch.compile(self.train_model)
            self._compiling = True
        self.compiled, self.compile_verdict = bool(verdict["compile"]), verdict
        if self.dist.main:
            print(f"compile: auto -> {'on' if self.compiled else 'off'} (a training step {verdict['eager_step_s']:.3f} s "
                  f"eager, {verdict['compiled_step_s']:.3f} s compiled, on this device and batch; "
                  f"{compile_choice.cache_path()})", file=sys.stderr)

    def train_epoch(self, batches: Iterable[Batch], steps: int, desc: str) -> dict[str, float]:
        """One pass over `batches` (`steps` of them). Returns the mean loss, the mean score (accuracy for
        the default criterion), seconds, examples/s and the lr, over all ranks, and `compile_seconds`: the
        part of the epoch spent measuring (compile: auto) and compiling, left out of seconds and examples/s."""
        self.train_model.train()
        loss_sum = torch.zeros((), device=self.device)
        score_sum = torch.zeros((), device=self.device)
        seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        compile_seconds = compiling = 0.0  # measuring before the loop; the first compiled step in it
        batches = iter(batches)
        if self.compiled is None:
            first = next(batches, None)
            if first is not None:
                start = time.perf_counter()
                self._resolve_compile(*first)
                compile_seconds += time.perf_counter() - start
                batches = itertools.chain([first], batches)
                self.train_model.train()
        start = time.perf_counter()
        # in a log (no terminal) redraw every 10 s, not every step
        interval = 0.1 if sys.stderr.isatty() else 10.0
        with tqdm(total=steps, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=interval,
                  disable=not self.dist.main) as bar:
            for step, (inputs, targets) in enumerate(batches, start=1):
                step_start = time.perf_counter() if self._compiling else 0.0
                loss, score = self._step(self.train_model, self.optimizer, inputs, targets, self.scaler)
                if self._compiling:  # the compiled module's first step: compiling, mostly
                    self._sync()
                    compiling = time.perf_counter() - step_start
                    self._compiling = False
                self.scheduler.step()
                loss_sum += loss.detach() * len(targets)
                score_sum += score.detach().float()
                seen += len(targets)
                bar.update(1)
                if self.slow_hint and step == ESTIMATE_AFTER:
                    self._estimate(step, time.perf_counter() - start)
                if step % CHECK_EVERY == 0 and not torch.isfinite(loss_sum):  # one host sync per CHECK_EVERY steps
                    self._diverged(desc, float(loss_sum))
                bar.set_postfix_str(f"{seen * self.dist.world / (time.perf_counter() - start):.0f} img/s",
                                    refresh=False)
        self._sync()
        seconds = max(time.perf_counter() - start - compiling, 1e-9)
        compile_seconds += compiling
        self.compile_seconds += compile_seconds
        loss_total, score_total, seen_total = all_sum([loss_sum, score_sum, seen], self.dist, self.device)
        mean_loss = loss_total / max(seen_total, 1)
        if not math.isfinite(mean_loss):
            self._diverged(desc, mean_loss)
        return {"loss": mean_loss, "score": score_total / max(seen_total, 1), "seconds": seconds,
                "images_per_s": seen_total / seconds, "lr": lr, "compile_seconds": compile_seconds}

    def _estimate(self, steps: int, seconds: float) -> None:
        """Warn, once, with the training time these first steps predict (a host sync: once per run)."""
        self._sync()
        total = seconds / steps * self.total_steps
        if self.dist.main:
            print(f"warning: about {total / 60:.0f} min of training at this speed "
                  f"({steps / seconds:.2f} steps/s on {self.device.type}): {self.slow_hint}", file=sys.stderr)
        self.slow_hint = None

    @staticmethod
    def _diverged(desc: str, loss: float) -> None:
        raise UserError(f"{desc}: the training loss became {loss}; the learning rate is likely too high (lower "
                        f"it) or the precision too low")

    def predict(self, inputs: Iterable[torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        """Outputs of `model` (default: the trained one); see `predict`."""
        return predict(model or self.model, inputs, self.device, self.dist, self.precision)


def slow_hint(params: dict, device: torch.device) -> str | None:
    """What to print when the `full` profile (sized for a GPU) resolved to a CPU: the `cpu` profile."""
    if params.get("profile_name") == "full" and device.type == "cpu":
        return "the `full` profile is sized for a GPU and this stage runs on a CPU; add -S profile=cpu"
    return None


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16); False where it cannot be read."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device, bf16_faster: Callable[[], bool] | None = None) -> str:
    """The param `precision` for `device`: `auto` -> bf16 on CUDA GPUs with native bf16, fp16 on older ones;
    fp32 on a CPU without bf16 instructions; on one with them (AVX512-BF16 or AMX-BF16) bf16 only where
    `bf16_faster()` says a training step measured faster there (selfsup/loop/precision_choice.py: on a 2-core
    Zen 5 bf16 trained slower than fp32, on a Xeon with AMX 1.67x faster), fp32 without such a measurement; fp32
    elsewhere (MPS included). An explicit bf16 on a CPU without bf16 instructions (which emulates it, 9x to 18x
    slower) gets a warning; an explicit choice the device cannot run is a UserError."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if name == "bf16" and not bf16:
            raise UserError(f"param 'precision' is 'bf16' but {torch.cuda.get_device_name(device)} has no native "
                            f"bf16: use precision=auto (fp16 with loss scaling) or fp32")
        return name if name != "auto" else "bf16" if bf16 else "fp16"
    if device.type == "cpu":
        if name == "auto":
            return "bf16" if cpu_has_bf16() and bf16_faster is not None and bf16_faster() else "fp32"
        if name == "bf16" and not cpu_has_bf16():
            print("warning: precision=bf16 on a CPU without bf16 instructions is emulated, 9x to 18x slower than "
                  "fp32: use precision=auto", file=sys.stderr)
        return name
    if name not in ("auto", "fp32"):
        raise UserError(f"param 'precision' is {name!r}: on {device.type} only fp32 is supported; use "
                        f"precision=auto or fp32")
    return "fp32"


def autocast(device: torch.device, precision: str = "fp32"):
    """Autocast to the precision's dtype (bf16 or fp16) on `device`; nothing for fp32."""
    if precision in DTYPES:
        return torch.autocast(device.type, dtype=DTYPES[precision])
    return nullcontext()


def channels_last(device: torch.device, precision: str = "fp32") -> bool:
    """Whether models and image batches use channels_last on `device` at `precision`: always on CUDA; on a
    CPU with bf16 autocast only (there the faster layout for 3 of 4 backbones measured on this project's
    CPU, while in fp32 contiguous was as fast or faster for 3 of 4, up to 19 %: docs/speed.md); not on MPS."""
    return device.type == "cuda" or (device.type == "cpu" and precision == "bf16")


def batch_channels_last(device: torch.device) -> bool:
    """Whether image batches reach the network channels_last: on CUDA and on CPUs, whatever the model's layout
    (`channels_last`). It is the layout the data path's gathers write, and the convolutions then run
    channels_last: on the 2-core Zen 3 `nets.fast_cnn:half` evaluated 5,000 images in 0.63 s that way against
    1.5 s from contiguous batches, and trained 1.4x to 2x faster (docs/speed.md). Not on MPS."""
    return device.type in ("cuda", "cpu")


def in_layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A batch of images (N x C x H x W, or N x K x C x H x W: K images an example) in `memory_format`, each
    image's; anything else as it is. No copy when it is already so."""
    if x.ndim == 4:
        return x.contiguous(memory_format=memory_format)
    if x.ndim == 5:
        return x.flatten(0, 1).contiguous(memory_format=memory_format).unflatten(0, x.shape[:2])
    return x


def to_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Image batches in the layout `batch_channels_last` picks for `device`."""
    return in_layout(x, torch.channels_last if batch_channels_last(device) else torch.contiguous_format)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor], device: torch.device,
                   precision: str = "fp32") -> None:
    """Re-estimate BatchNorm running statistics of `model` on `inputs` (a plain average over them)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with autocast(device, precision):
        for x in inputs:
            model(to_layout(x, device))


@torch.no_grad()
def predict(model: nn.Module, inputs: Iterable[torch.Tensor], device: torch.device, dist: Dist = Dist(),
            precision: str = "fp32") -> torch.Tensor:
    """Outputs of `model` in eval mode for every batch, concatenated on the CPU as float. Under torchrun the
    batches are dealt round-robin over the ranks and gathered back in order."""
    model.eval()
    outs = []
    with autocast(device, precision):
        for i, x in enumerate(inputs):
            if i % dist.world == dist.rank:
                outs.append(model(to_layout(x, device)).float())
    return torch.cat(gather_in_order(outs, dist)).cpu()


def classification_metrics(logits: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Loss, accuracy and macro precision/recall/F1 (scikit-learn) of logits against labels."""
    preds = logits.argmax(1).numpy()
    loss = F.cross_entropy(logits, torch.as_tensor(labels)).item()
    precision, recall, f1, _ = precision_recall_fscore_support(labels, preds, average="macro", zero_division=0)
    return {"loss": loss, "accuracy": float(accuracy_score(labels, preds)), "precision_macro": float(precision),
            "recall_macro": float(recall), "f1_macro": float(f1)}


def index_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """`steps` batches of indices into range(n), on the generator's device: shuffled passes chained, the
    last partial batch of a pass topped up from the next, so every step has min(batch_size, n) examples."""
    size = min(batch_size, n)
    buffer = torch.empty(0, dtype=torch.long, device=generator.device)
    for _ in range(steps):
        while len(buffer) < size:
            buffer = torch.cat([buffer, torch.randperm(n, generator=generator, device=generator.device)])
        yield buffer[:size]
        buffer = buffer[size:]


def chunks(images: torch.Tensor, batch_size: int, transform: Callable[[torch.Tensor], torch.Tensor]
           ) -> Iterable[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield transform(images[i:i + batch_size])
