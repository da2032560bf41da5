"""torchrun with 2 gloo processes on CPU gives the single-process result, and writes one set of outputs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.training.distributed import CpuSyncBatchNorm, Dist
from tests.synthetic import read_params, stage_workspace, write_params

ROOT = Path(__file__).resolve().parents[1]


def stage(workspace: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(workspace)}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=workspace, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def set_params(workspace: Path, **top) -> None:
    params = read_params(workspace)
    params.update(top)
    write_params(workspace, params)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The stage scripts and a tiny dataset and split, ready for pretrain/finetune."""
    return stage_workspace(tmp_path_factory.mktemp("ddp"), pretext={"epochs": 1, "lr": 0.01},
                           finetune={"epochs": 3, "lr": 0.01})


def run_both(ws: Path, module: str, args: tuple[str, ...], outputs: list[str]) -> list[Path]:
    """Run a stage with nproc=1 and nproc=2; return copies of its outputs from each."""
    copies = []
    for nproc in (1, 2):
        set_params(ws, nproc=nproc)
        proc = stage(ws, module, *args)
        if nproc == 2:
            assert "launching 2 processes" in proc.stderr
        dest = ws.parent / f"{module}-{'-'.join(args)}-{nproc}"
        for out in outputs:
            src = ws / out
            (dest / out).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / out)
        copies.append(dest)
    set_params(ws, nproc=1)
    return copies


def history(live_dir: Path, key: str) -> list[float]:
    with open(live_dir / "plots" / "metrics" / f"{key}.tsv") as f:
        return [float(row[key.split("/")[-1]]) for row in csv.DictReader(f, delimiter="\t")]


@pytest.mark.e2e
def test_finetune_on_two_processes_matches_one(workspace):
    single, double = run_both(workspace, "stages.finetune", ("--init", "scratch", "--seed", "0"),
                              ["metrics/runs/finetune/scratch/seed0", "models/finetune/scratch/seed0.pt"])
    live = Path("metrics/runs/finetune/scratch/seed0")
    # The same steps on the same global batches. Float sums in another order (two half batches, synced
    # BatchNorm) differ by ~1e-4 at first, and training amplifies that, as two thread counts already do:
    # so tight on the first epoch, looser after.
    first, last = history(single / live, "train/loss"), history(double / live, "train/loss")
    assert last[0] == pytest.approx(first[0], rel=0.01)
    assert last[-1] == pytest.approx(first[-1], rel=0.1)
    s = json.loads((single / live / "metrics.json").read_text())["final"]
    d = json.loads((double / live / "metrics.json").read_text())["final"]
    assert d["steps"] == s["steps"]
    assert s["val"]["f1_macro"] > 0.5  # it learned
    assert d["val"]["f1_macro"] == pytest.approx(s["val"]["f1_macro"], abs=0.05)
    assert d["test"]["accuracy"] == pytest.approx(s["test"]["accuracy"], abs=0.05)
    # evaluation covers exactly the test set: one prediction per test image, in order
    rows = list(csv.DictReader(open(double / live / "predictions.csv")))
    assert [int(r["index"]) for r in rows] == list(range(100))
    # one set of outputs: no per-rank copies, no leftover temporary files
    leftovers = [p.name for p in (workspace / "metrics" / "runs" / "finetune").rglob("*") if "tmp" in p.name]
    assert not leftovers
    assert sorted(p.name for p in (workspace / "models" / "finetune" / "scratch").iterdir()) == ["seed0.pt"]


@pytest.mark.e2e
def test_pretrain_on_two_processes_matches_one(workspace):
    single, double = run_both(workspace, "stages.pretrain", ("--seed", "0"), ["metrics/runs/pretrain/seed0"])
    live = Path("metrics/runs/pretrain/seed0")
    assert history(double / live, "train/pretext_loss") == pytest.approx(
        history(single / live, "train/pretext_loss"), rel=0.01)
    assert history(double / live, "val/pretext_accuracy") == pytest.approx(
        history(single / live, "val/pretext_accuracy"), abs=0.1)
    assert (double / "metrics/runs/pretrain/seed0/metrics.json").exists()
    assert (workspace / "models/pretrained/seed0.pt").exists()


def _sync_bn_worker(rank: int, port: int, x: torch.Tensor, queue, dtype: torch.dtype = torch.float32) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = CpuSyncBatchNorm(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    part = Dist(rank, 2).take(x).clone().to(dtype).requires_grad_(True)  # bf16: what a conv gives under autocast
    y = bn(part)
    assert y.dtype == dtype
    y = y.float()
    (y * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()
    # numpy arrays travel by value: torch tensors would travel as shared-memory handles, which break
    # when this process exits before the parent reads them
    queue.put((rank, *(t.detach().float().numpy().copy() for t in (y, part.grad, bn.weight.grad, bn.running_var))))
    dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpu_sync_batchnorm_equals_batchnorm_on_the_whole_batch(dtype):
    """Also for bf16 inputs (a conv's output under bf16 autocast): statistics in fp32, output in bf16."""
    torch.manual_seed(1)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    if dtype is torch.bfloat16:
        x = x.to(dtype).float()  # the values a bf16 input can hold, so the fp32 reference sees the same
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000 + (dtype is torch.bfloat16)
    procs = [ctx.Process(target=_sync_bn_worker, args=(r, port, x, queue, dtype)) for r in range(2)]
    for p in procs:
        p.start()
    results = {r[0]: [torch.from_numpy(a) for a in r[1:]] for r in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=60)

    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    whole = x.clone().requires_grad_(True)
    y = bn(whole)
    # the same weighting per example as the ranks used on their shares
    weights = torch.empty_like(y)
    for rank in range(2):
        share = Dist(rank, 2).take(torch.arange(8))
        weights[share] = torch.arange(len(share) * 75).view(len(share), 3, 5, 5).float().sin()
    (y * weights).sum().backward()
    weight_grad = sum(results[r][2] for r in range(2))  # DDP would sum (then average) these
    for rank in range(2):
        share = Dist(rank, 2).take(torch.arange(8))
        out, grad, _, running_var = results[rank]
        tol = 1e-5 if dtype is torch.float32 else 2e-2  # bf16 output and input gradient: 8 mantissa bits
        assert torch.allclose(out, y.detach()[share], atol=tol, rtol=tol)
        assert torch.allclose(grad, whole.grad[share], atol=tol, rtol=tol)
        assert torch.allclose(running_var, bn.running_var, atol=1e-5)  # statistics stay fp32-exact
    assert torch.allclose(weight_grad, bn.weight.grad, atol=1e-4 if dtype is torch.float32 else 0.1)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_two_nodes_over_c10d_rendezvous_match_one_process(workspace, tmp_path):
    """What a cluster runs, on localhost: one torchrun per node, 1 process each, joined by torchrun's c10d
    rendezvous (`--nnodes 2 --rdzv-backend c10d --rdzv-endpoint host:port`), gloo between the nodes."""
    out = ["metrics/runs/finetune/scratch/seed0", "models/finetune/scratch/seed0.pt"]
    set_params(workspace, nproc=1)
    stage(workspace, "stages.finetune", "--init", "scratch", "--seed", "0")
    single = tmp_path / "single"
    shutil.copytree(workspace / out[0], single / out[0])
    shutil.rmtree(workspace / out[0])
    (workspace / out[1]).unlink()
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(workspace)}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "study",
                               "-m", "stages.finetune", "--init", "scratch", "--seed", "0"],
                              cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    logs = [node.communicate(timeout=600) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(err[-2000:] for _, err in logs)
    live = Path(out[0])
    first, two = history(single / live, "train/loss"), history(workspace / live, "train/loss")
    assert two[0] == pytest.approx(first[0], rel=0.01) and two[-1] == pytest.approx(first[-1], rel=0.1)
    s = json.loads((single / live / "metrics.json").read_text())["final"]
    d = json.loads((workspace / live / "metrics.json").read_text())["final"]
    # 30 validation images: under bf16 (auto on an avx512_bf16 CPU) two processes round differently, and a Zen 4
    # ended 2 images apart (0.932 against 1.0) where the Xeon matched to 0.05; the losses above match either way
    assert d["steps"] == s["steps"] and d["val"]["f1_macro"] == pytest.approx(s["val"]["f1_macro"], abs=0.1)
    assert d["processes"] == 2 and s["processes"] == 1
