"""How far a training step is from the machine's limit: multiply-adds of a network per example, and a CPU's
peak FLOP/s from its core count, clock and vector units. Used by tools/bench.py; the figures are in
docs/speed.md.

Multiply-adds are counted on the real network and input by hooks on its convolutions and linear layers (the
other layers' arithmetic, BatchNorm, ReLU and pooling, is memory-bound and small beside them). A training
step costs about three forwards: the forward, the gradient with respect to each layer's input and the one
with respect to its weights (the first layer skips its input gradient, so slightly less).

The peak is an estimate from public microarchitecture facts, named in `peak_basis`: FLOPs per cycle per core
(two per fused multiply-add) times cores times the clock /proc/cpuinfo reports (under a hypervisor often the
nominal one; a boosting core runs faster, so the ratio is an upper bound).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

TRAIN_STEP_FORWARDS = 3  # forward + input gradient + weight gradient


def multiply_adds(net: nn.Module, inputs: torch.Tensor) -> float:
    """Multiply-adds of one forward pass of `net` on `inputs`, per example (convolutions and linear layers)."""
    total = 0

    def conv(module: nn.Conv2d, _, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear(module: nn.Linear, _, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in net.modules() if isinstance(m, nn.Linear)]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(inputs)
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return total / len(inputs)


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """Vendor, family, model, clock (MHz) and flags of the first CPU in /proc/cpuinfo; {} where unreadable."""
    try:
        lines = cpuinfo.read_text().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return {"vendor": fields.get("vendor_id", ""), "family": int(fields.get("cpu family", 0) or 0),
            "model": int(fields.get("model", 0) or 0), "mhz": float(fields.get("cpu MHz", 0) or 0),
            "flags": set(fields.get("flags", "").split())}


def flops_per_cycle(facts: dict[str, object]) -> tuple[float, float, str]:
    """(fp32, bf16) FLOPs per cycle per core, and the basis of the estimate. Two FMA pipes everywhere here:
    AVX2: 2 x 8 fp32 lanes x 2. AMD Zen 4 (family 25 with AVX-512) runs 512-bit ops on 256-bit pipes, so
    fp32 stays 32; its AVX512-BF16 dot product does two bf16 multiply-adds per fp32 lane: 64. Zen 5 (family
    26) has full 512-bit pipes: 64 and 128. Intel with AVX-512: 64 fp32, bf16 128 with AVX512-BF16; AMX's
    tiles go far beyond (not estimated). Without bf16 instructions bf16 is emulated (no peak)."""
    flags, vendor, family = facts.get("flags", set()), facts.get("vendor"), facts.get("family")
    avx512 = "avx512f" in flags
    if vendor == "AuthenticAMD" and family == 25 and avx512:
        fp32, basis = 32.0, "AMD Zen 4: AVX-512 on two 256-bit FMA pipes"
    elif vendor == "AuthenticAMD" and family == 26:
        fp32, basis = 64.0, "AMD Zen 5: two 512-bit FMA pipes"
    elif avx512:
        fp32, basis = 64.0, "AVX-512: two 512-bit FMA pipes"
    elif "avx2" in flags and "fma" in flags:
        fp32, basis = 32.0, "AVX2: two 256-bit FMA pipes"
    else:
        fp32, basis = 16.0, "SSE or unknown: 4-wide, two pipes"
    bf16 = 2 * fp32 if "avx512_bf16" in flags else 0.0
    return fp32, bf16, basis + ("; bf16 dot products double it" if bf16 else "; no bf16 instructions")


def cpu_peak(threads: int, cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """Peak fp32 and bf16 GFLOP/s of `threads` cores of this CPU at the clock /proc/cpuinfo reports."""
    facts = cpu_facts(cpuinfo)
    if not facts:
        return {}
    fp32, bf16, basis = flops_per_cycle(facts)
    ghz = facts["mhz"] / 1000
    return {"cores": threads, "ghz": ghz, "fp32_gflops": threads * ghz * fp32, "bf16_gflops": threads * ghz * bf16,
            "basis": f"{basis}; {threads} cores x {ghz:.2f} GHz", "cpu": f"{facts['vendor']} family {facts['family']} "
            f"model {facts['model']}"}
