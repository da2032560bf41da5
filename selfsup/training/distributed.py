"""Several processes, one result: torchrun launch, data sharding, synced BatchNorm, gathering predictions.

A stage runs as one process by default. With the param `nproc` > 1 (or when started by `torchrun`), each
process (rank) draws the same global batch from the same generator, augments it, and trains on its share
`batch[rank::world]`; DistributedDataParallel averages the gradients and BatchNorm statistics are synced
across ranks, so the step equals the single-process step on the whole batch. Evaluation splits the batches
over the ranks and gathers them back in order: exactly the evaluated set, no padded duplicates. Only rank 0
writes outputs and logs. CUDA ranks use NCCL and one GPU each; CPU ranks use gloo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from selfsup.core.params import UserError, load_params, param


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch."""
        if self.world == 1:
            return batch
        if len(batch) % self.world:
            raise UserError(f"a batch of {len(batch)} does not split evenly over nproc={self.world} processes: "
                            f"choose a batch size (and a dataset size) divisible by nproc")
        return batch[self.rank::self.world]


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(nproc: int) -> int:
    """Run the current `python -m <module> args` again under torchrun with `nproc` processes."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is None:
        raise UserError("nproc > 1 needs the stage started as a module: python -m stages.<name>")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", spec.name, *sys.argv[1:]]
    print(f"launching {nproc} processes: {' '.join(cmd[1:])}", file=sys.stderr)
    return subprocess.call(cmd)


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (if any); return this rank and its device."""
    if not under_torchrun():
        return Dist(), device
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"nproc={world} processes but only {torch.cuda.device_count()} GPUs on this machine")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"param 'nproc' > 1 needs device cuda or cpu, not {device.type}")
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, device_id=device if backend == "nccl" else None)
    return Dist(rank, world), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are summed over all ranks (torch's SyncBatchNorm is GPU-only).

    The all-reduces are differentiable, so gradients flow through the shared statistics as in SyncBatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dtype, x = x.dtype, x.float()  # statistics in fp32 under autocast too (bf16 sums lose digits)
        c = x.shape[1]
        # two passes (mean, then squared deviations): E[x^2] - E[x]^2 loses digits when |mean| >> std
        total = dist_nn.all_reduce(torch.cat([x.sum((0, 2, 3)), x.new_full((1,), x.numel() // c)]))
        count = total[-1]
        mean = total[:c] / count
        centred = x - mean.view(1, c, 1, 1)
        var = dist_nn.all_reduce((centred * centred).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), factor)
        y = centred * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(dtype)


def _cpu_sync(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        synced = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        synced.weight, synced.bias = module.weight, module.bias  # the same Parameters: optimisers keep them
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, _cpu_sync(child))
    return module


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _cpu_sync(model)


def all_sum(values: list[torch.Tensor | float], d: Dist, device: torch.device) -> list[float]:
    """Sum scalars over ranks (one collective); returns host floats."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    if d.world > 1:
        dist.all_reduce(t)
    return t.tolist()


def gather_in_order(local: list[torch.Tensor], d: Dist) -> list[torch.Tensor]:
    """Batches were dealt round-robin (batch i to rank i % world): collect them back in their order."""
    if d.world == 1:
        return local
    parts: list[Any] = [None] * d.world
    dist.all_gather_object(parts, [t.cpu() for t in local])
    total = sum(len(p) for p in parts)
    return [parts[i % d.world][i // d.world] for i in range(total)]


class NullLive:
    """Stands in for dvclive's Live on ranks other than 0: logs nothing, writes nothing."""

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}

    def log_metric(self, *args: Any, **kwargs: Any) -> None:
        pass

    def next_step(self) -> None:
        pass

    def end(self) -> None:
        pass


def parallel(main: Callable[[], None]) -> Callable[[], None]:
    """`main`, but with the param `nproc` > 1 started again under torchrun (selfsup/stage.py runs it)."""
    def entry() -> None:
        nproc = param(load_params(), "nproc")
        if nproc > 1 and not under_torchrun():
            code = relaunch(nproc)
            if code:
                sys.exit(code)
            return
        try:
            main()
        finally:
            teardown()
    return entry
