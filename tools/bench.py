"""Benchmark: how close the training path comes to the model's own speed, and to what most CIFAR code does.

    python -m tools.bench --arch resnet18 --stem cifar --batch-size 256 --json bench.json

In one run, on one device, for the fine-tune step (images/s) and the pretext step of each task in
`--pretext` (examples/s: images, or for context pairs of patches, for jigsaw 9-tile puzzles):
- model-only: forward+backward+step on one fixed batch already on the device: the limit;
- ours: the real engine (`Trainer.train_epoch`) on the real batch streams of the stages (uint8 dataset
  tensors on the device, augmentation batched there);
- usual (fine-tune only): a torchvision-style `Dataset` of PIL images, `DataLoader` workers and PIL
  transforms (random crop with padding, flip, to-tensor, normalise), batches copied to the device;
- streamed (`--streamed`): the stages' path for images that do not fit the device (param `stream`):
  each batch read from the memory-mapped arrays and copied over, the next one prefetched while a step
  trains; its ratio to ours is what streaming costs.
All three feed the same `Trainer`, so the differences are the data path alone. The paths are measured in
turn, `--repeats` times, and the median is reported, with the memory each data path adds: host memory of
the DataLoader worker processes (proportional set size) for the usual path; ours adds none on the host
beyond the uint8 arrays every path loads (`torch.from_numpy` shares them), and on a GPU holds the uint8
dataset there (`dataset_on_device_mb`); GPU peak memory above model-only for each path.
For each step it also counts the network's multiply-adds per example (tools/roofline.py) and turns each
path's rate into achieved GFLOP/s (a training step: about three forwards), beside this CPU's estimated fp32
and bf16 peak. `--check R` makes it the speed check: exit status 1, naming the step, when ours runs below R
times model-only for any step measured (e.g. `--check 0.95`).
Not a DVC stage: it writes nothing but the optional JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from selfsup.training.augment import labelled_batches
from selfsup.core.dataset import load_dataset
from selfsup.training.image_store import ImageStore, prefetched
from selfsup.training.devices import configure_device, device_generator, resolve_device, seed_everything
from selfsup.core.params import PRECISIONS, STEMS
from selfsup.finetune import FineTune, Setup
from selfsup.loop.training_stage import Recipe, TrainingStage
from selfsup.training.distributed import Dist
import selfsup.loop.precision_choice as precision_choice
from selfsup.training.engine import (Batch, Trainer, batch_channels_last, channels_last, in_layout, resolve_precision,
                                     sgd)
from selfsup.training.models import build_extractor
from selfsup.config import TASK_PARAMS, defaults
from selfsup.core.params import UserError, load_params
from selfsup.pretexts import TASKS, build_task
from selfsup.pretexts.base import pretext_batches
from selfsup.core.stage import run_stage
from tools import roofline
from study.markdown import first_paragraph

ROOT = Path(__file__).resolve().parents[1]
CODE = ("selfsup", "tools/bench.py", "tools/roofline.py", "nets", "params.yaml")  # what a benchmark run executes or reads


class PILDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image from the array, then the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable):
        self.images = images.transpose(0, 2, 3, 1)  # HWC for PIL, a view
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def workers_memory_mb() -> float:
    """Proportional set size (shared pages counted once) of this process's children: DataLoader workers."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            info = child.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total / 2 ** 20


def repeat(batch: Batch) -> Iterator[Batch]:
    while True:
        yield batch


def from_loader(loader: DataLoader, device: torch.device) -> Iterator[Batch]:
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class DataPath:
    """One data path: a stream of batches and the memory it holds while running."""

    def __init__(self, name: str, stream: Iterator[Batch]):
        self.name, self.stream, self.rates, self.memory = name, stream, [], []


def arithmetic(results: dict, net: torch.nn.Module, inputs: torch.Tensor, unit: str, peak: dict,
               precision: str) -> None:
    """Add the network's multiply-adds per example and each path's achieved GFLOP/s (and share of the peak)."""
    macs = roofline.multiply_adds(net, inputs)
    results["multiply_adds_forward"] = macs
    peak_gflops = peak.get(f"{precision}_gflops") or 0.0
    for name in ("model_only", "ours", "usual", "streamed"):
        if name in results:
            gflops = 2 * roofline.TRAIN_STEP_FORWARDS * macs * results[name][f"{unit}_per_s"] / 1e9
            results[name]["gflops"] = gflops
            results[name]["of_peak"] = gflops / peak_gflops if peak_gflops else None


def measure(trainer: Trainer, paths: list[DataPath], steps: int, warmup: int, repeats: int, device: torch.device,
            unit: str) -> dict:
    results: dict = {}
    for p in paths:  # warm-up: first batches, worker start-up, cudnn autotuning, compilation
        start = time.perf_counter()
        trainer.train_epoch((next(p.stream) for _ in range(warmup)), warmup, f"{p.name} warm-up")
        results[p.name] = {"warmup_seconds": time.perf_counter() - start}
    for r in range(repeats):
        for p in paths if r % 2 == 0 else paths[::-1]:  # alternate the order: drift cancels out
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            stats = trainer.train_epoch((next(p.stream) for _ in range(steps)), steps, f"{p.name} {r + 1}/{repeats}")
            p.rates.append(stats["images_per_s"])
            p.memory.append(workers_memory_mb() if p.name == "usual" else 0.0)
            if device.type == "cuda":
                results[p.name]["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    for p in paths:
        results[p.name].update({f"{unit}_per_s": statistics.median(p.rates), f"{unit}_per_s_runs": p.rates,
                                "added_memory_mb": max(p.memory)})
    # ratios are paired: path / reference within each round (measured back to back), then the median over
    # rounds; the machine's drift between rounds, up to +-10 % on a shared CPU, cancels out of them
    by_name = {p.name: p for p in paths}
    for p in paths:
        results[p.name].update(paired_ratio(p, by_name["model_only"], "model_only"))
    if "usual" in by_name:
        results["ours"].update(paired_ratio(by_name["ours"], by_name["usual"], "usual"))
    if "streamed" in by_name:  # streamed from the memory-mapped arrays against held on the device
        results["streamed"].update(paired_ratio(by_name["streamed"], by_name["ours"], "ours"))
    if device.type == "cuda":
        for p in paths:
            results[p.name]["gpu_added_mb"] = results[p.name]["gpu_peak_mb"] - results["model_only"]["gpu_peak_mb"]
    return results


def paired_ratio(path: DataPath, reference: DataPath, name: str) -> dict:
    """Median and range over rounds of path's rate / reference's rate in the same round."""
    rounds = [a / b for a, b in zip(path.rates, reference.rates)]
    return {f"ratio_to_{name}": statistics.median(rounds), f"ratio_to_{name}_runs": rounds}


def bench(args: argparse.Namespace) -> dict:
    params = load_params(Path(args.params))
    # params.yaml holds the chosen task's section alone: the others measured get their declared defaults
    params["pretext"] = {t: defaults(c) for t, c in TASK_PARAMS.items()} | params["pretext"]
    device = configure_device(resolve_device(args.device))  # the stages' settings
    seed_everything(0)
    dataset, meta = load_dataset(Path(args.dataset))
    precision = resolve_precision(args.precision, device, precision_choice.bf16_faster(
        args.arch, args.stem, meta["image_size"], len(dataset.classes), args.batch_size, device))
    mean = torch.tensor(meta["mean"], device=device)
    std = torch.tensor(meta["std"], device=device)
    gen = device_generator(0, device)
    bs = args.batch_size
    pad = params["finetune"]["crop_padding"]
    report: dict = {"arch": args.arch, "stem": args.stem, "batch_size": bs, "device": str(device),
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                    or platform.machine(), "cpu_threads": torch.get_num_threads(), "compile": args.compile,
                    "torch": torch.__version__, "dataset": str(args.dataset), "train_size": len(dataset.train_labels),
                    "steps": args.steps, "repeats": args.repeats, "commit": commit(), "precision": precision,
                    "channels_last": channels_last(device, precision) if args.memory_format == "auto"
                    else args.memory_format == "channels_last",
                    "batch_channels_last": batch_channels_last(device) if args.memory_format == "auto"
                    else args.memory_format == "channels_last"}

    # ---- fine-tune step: the stages' own fine-tune (selfsup.finetune) on every training image, at the
    # benchmark's batch, precision, compile and layout; lr 0.01 for as many steps as the paths take
    recipe = Recipe(epochs=10 ** 6, batch_size=bs, lr=0.01, weight_decay=5e-4, warmup_epochs=0.0, eval_batch_size=bs)
    setup = Setup(args.arch, args.stem, "scratch", 0, recipe, label_smoothing=0.0, crop_padding=pad)
    stage = TrainingStage({"compile": args.compile}, Dist(), device, precision, time.perf_counter())
    rows = np.arange(len(dataset.train_labels))  # one image held out: a fine-tune has a validation set
    ft = FineTune(setup, dataset, meta, rows[1:], rows[:1], stage, "never", args.memory_format, test=False)
    trainer = ft.trainer
    images, labels = ft.train_x, ft.train_y  # held on the device, as the stages hold them
    streamed = ImageStore([dataset.train_images], device, stream=True, rows=[rows[1:]])  # param `stream: always`
    fixed = next(ft.epoch_batches())
    usual = transforms.Compose([transforms.RandomCrop(dataset.train_images.shape[-1], padding=pad,
                                                      padding_mode="reflect"),
                                transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                transforms.Normalize(meta["mean"], meta["std"])])
    loader = DataLoader(PILDataset(dataset.train_images, dataset.train_labels, usual), batch_size=bs,
                        shuffle=True, drop_last=True, num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    steps = math.ceil(len(images) / bs)
    paths = [DataPath("model_only", repeat(fixed)),
             DataPath("ours", itertools.chain.from_iterable(ft.epoch_batches() for _ in itertools.count()))]
    if not args.no_usual:
        paths.append(DataPath("usual", from_loader(loader, device)))
    if args.streamed:
        paths.append(DataPath("streamed", prefetched(labelled_batches(streamed, labels, bs, 10 ** 9, pad, mean, std,
                                                                      gen))))
    report["peak"] = roofline.cpu_peak(torch.get_num_threads()) if device.type == "cpu" else {}
    report["finetune"] = measure(trainer, paths, args.steps, args.warmup, args.repeats, device, "images")
    arithmetic(report["finetune"], trainer.model, in_layout(fixed[0], trainer.batch_format), "images", report["peak"],
               precision)
    if not args.no_usual:
        report["finetune"]["usual"]["workers"] = args.workers
    report["finetune"]["epoch_steps"] = steps
    report["dataset_on_device_mb"] = (len(images) * dataset.train_images[0].nbytes + labels.numel() * 8) / 2 ** 20
    del paths, loader

    # ---- pretext steps, one per task asked for
    report["pretext"] = {}
    for name in [params["pretext"]["task"]] if args.pretext is None else args.pretext:
        task = build_task({**params, "pretext": {**params["pretext"], "task": name}}, meta["image_size"], mean, std)
        extractor, feat_dim = build_extractor(args.arch, args.stem)
        net = task.network(extractor, feat_dim)
        trainer = Trainer(net, sgd(net, 0.01, 5e-4), 10 ** 9, 0, device, compile=args.compile,
                          criterion=task.criterion, precision=precision, memory_format=args.memory_format)
        stream = pretext_batches(task, images, bs, 10 ** 9, gen)
        first = next(stream)
        paths = [DataPath("model_only", repeat(first)), DataPath("ours", stream)]
        if args.streamed:
            paths.append(DataPath("streamed", prefetched(pretext_batches(task, streamed, bs, 10 ** 9, gen))))
        report["pretext"][name] = measure(trainer, paths, args.steps, args.warmup, args.repeats, device, "examples")
        arithmetic(report["pretext"][name], trainer.model, in_layout(first[0], trainer.batch_format), "examples",
                   report["peak"], precision)
    return report


def commit() -> str:
    """The measured code's commit, "-dirty" when the code it runs (selfsup/, tools/bench.py, nets/, params.yaml)
    differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *CODE], cwd=ROOT).returncode == 1
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if changed else "")


def below(report: dict, ratio: float) -> list[str]:
    """The steps whose ours / model-only (median over rounds) is below `ratio`, with the figure."""
    steps = [("finetune", report["finetune"])] + [(f"pretext {t}", r) for t, r in report["pretext"].items()]
    return [f"{step} {r['ours']['ratio_to_model_only']:.3f}" for step, r in steps
            if r["ours"]["ratio_to_model_only"] < ratio]


def table(report: dict) -> str:
    lines = [f"{report['arch']} ({report['stem']} stem), batch {report['batch_size']}, {report['device']} "
             f"({report['device_name']}, {report['cpu_threads']} threads), compile={report['compile']}, "
             f"precision={report['precision']}, channels_last={report['channels_last']} (model), "
             f"{report.get('batch_channels_last')} (batches)"]
    steps = [("finetune", report["finetune"], "images")] if "finetune" in report else []
    steps += [(f"pretext {task}", r, "examples") for task, r in report["pretext"].items()]
    for step, result, unit in steps:
        lines.append(f"  {step + ':':<23}{unit + '/s':>11}{'/model-only':>13}{'(rounds)':>13}{'/usual':>8}"
                     f"{'/ours':>7}{'+host MB':>12}{'+GPU MB':>9}{'warm-up s':>11}{'GFLOP/s':>9}{'/peak':>7}"
                     f"   ({result.get('multiply_adds_forward', 0) / 1e6:.1f} M multiply-adds a forward)")
        for name in ("model_only", "ours", "usual", "streamed"):
            r = result.get(name)
            if r is None:
                continue
            usual = f"{r['ratio_to_usual']:.2f}" if "ratio_to_usual" in r else ""
            ours = f"{r['ratio_to_ours']:.2f}" if "ratio_to_ours" in r else ""
            gpu = f"{r['gpu_added_mb']:.0f}" if "gpu_added_mb" in r else ""
            rounds = r["ratio_to_model_only_runs"]
            spread = f"{min(rounds):.2f}-{max(rounds):.2f}"
            of_peak = f"{r['of_peak']:.2f}" if r.get("of_peak") else ""
            lines.append(f"    {name:<21}{r[unit + '_per_s']:>11.0f}{r['ratio_to_model_only']:>13.3f}{spread:>13}"
                         f"{usual:>8}{ours:>7}{r['added_memory_mb']:>12.0f}{gpu:>9}{r['warmup_seconds']:>11.1f}"
                         f"{r.get('gflops', 0):>9.1f}{of_peak:>7}")
    peak = report.get("peak") or {}
    if peak:
        lines.append(f"  peak: {peak['fp32_gflops']:.0f} GFLOP/s fp32, {peak['bf16_gflops']:.0f} bf16 ({peak['cpu']}: "
                     f"{peak['basis']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--stem", default="cifar", choices=list(STEMS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per path and repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per path first")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds over the paths; medians are reported, ratios paired within a round")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers of the usual path")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="autocast dtype, as the param `precision` (auto: what the stages would pick here)")
    parser.add_argument("--memory-format", default="auto", choices=["auto", "contiguous", "channels_last"],
                        help="layout of models and batches (auto: what the stages use on this device)")
    parser.add_argument("--no-usual", action="store_true", help="skip the DataLoader path (cost tables)")
    parser.add_argument("--streamed", action="store_true",
                        help="also measure the streamed path (param `stream: always`: batches read from the "
                             "memory-mapped arrays, next one prefetched) against ours (held on the device)")
    parser.add_argument("--pretext", nargs="*", choices=sorted(TASKS),
                        help="pretext tasks to measure (default: params' pretext.task; none: only fine-tune)")
    parser.add_argument("--dataset", default="data/dataset", help="a directory written by the download stage")
    parser.add_argument("--params", default="params.yaml", help="for the patch geometry and crop padding")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--check", type=float, metavar="R",
                        help="exit 1 when ours / model-only is below R for any step (the speed check)")
    args = parser.parse_args()
    if min(args.batch_size, args.steps, args.repeats) < 1 or args.warmup < 0 or args.workers < 0:
        raise UserError("--batch-size, --steps and --repeats must be >= 1; --warmup and --workers >= 0")
    report = bench(args)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.check is not None:
        slow = below(report, args.check)
        if slow:
            raise UserError(f"ours / model-only below {args.check}: " + ", ".join(slow))
        print(f"check: ours >= {args.check} x model-only for every step measured")


if __name__ == "__main__":
    run_stage(main)  # it reads --params, not necessarily params.yaml
