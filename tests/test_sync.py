"""No host round trip inside a training step: the per-step constants (context offsets, gray weights, jigsaw
cells and permutations, SimCLR colour matrices) are on the device once, and nothing in a step reads a value
back to the host. On CUDA `torch.cuda.set_sync_debug_mode("error")` checks the synchronisations themselves;
on a CPU every tensor made from host data, every copy between devices and every read-back is counted, and
the count must not grow with the number of steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from selfsup.training.augment import labelled_batches
from selfsup.training.engine import Trainer, sgd
from selfsup.training.models import Classifier, build_extractor
from selfsup.pretexts import TASKS
from selfsup.pretexts.base import pretext_batches
from tests.synthetic import images
from tests.test_pretexts import MEAN, STD, task_for

WATCHED = {torch.tensor, torch.as_tensor, torch.from_numpy, torch.Tensor.to, torch.Tensor.cuda,
           torch.Tensor.cpu, torch.Tensor.copy_, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy,
           torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


class HostTraffic(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in WATCHED:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


IMAGES = torch.from_numpy(images(np.arange(64) % 10, 0))


def traffic(make_batches, trainer: Trainer, steps: int) -> list[str]:
    with HostTraffic() as mode:
        trainer.train_epoch(make_batches(steps), steps, "sync")
    return mode.calls


def assert_no_traffic_per_step(make_batches, trainer: Trainer) -> None:
    traffic(make_batches, trainer, 2)  # warm-up: constants reach the device here, once
    few, many = traffic(make_batches, trainer, 2), traffic(make_batches, trainer, 8)
    assert len(many) == len(few), f"host traffic grows with steps: {sorted(set(many) - set(few)) or many}"


@pytest.mark.parametrize("name", list(TASKS))
def test_a_pretext_step_makes_no_host_traffic(name):
    task = task_for(name)
    extractor, dim = build_extractor("nets.small_cnn:build", "imagenet")
    net = task.network(extractor, dim)
    trainer = Trainer(net, sgd(net, 0.01, 0.0), 100, 0, torch.device("cpu"), criterion=task.criterion)
    gen = torch.Generator().manual_seed(0)
    assert_no_traffic_per_step(lambda steps: pretext_batches(task, IMAGES, 8, steps, gen), trainer)


def test_a_finetune_step_makes_no_host_traffic():
    extractor, dim = build_extractor("nets.small_cnn:build", "imagenet")
    model = Classifier(extractor, dim, 10)
    trainer = Trainer(model, sgd(model, 0.01, 0.0), 100, 0, torch.device("cpu"))
    labels = torch.from_numpy(np.arange(64) % 10)
    gen = torch.Generator().manual_seed(0)
    assert_no_traffic_per_step(lambda steps: labelled_batches(IMAGES, labels, 8, steps, 4, MEAN, STD, gen), trainer)


def test_the_counter_sees_a_per_step_copy():
    # the check itself: a step that moves a constant to the device every time is caught
    extractor, dim = build_extractor("nets.small_cnn:build", "imagenet")
    model = Classifier(extractor, dim, 10)
    trainer = Trainer(model, sgd(model, 0.01, 0.0), 100, 0, torch.device("cpu"))
    offsets = torch.arange(10)

    def leaky(steps):
        for _ in range(steps):
            yield IMAGES[:8].float() + offsets.to("cpu")[:1], offsets.to("cpu")[:8]

    with pytest.raises(AssertionError, match="grows with steps"):
        assert_no_traffic_per_step(leaky, trainer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(TASKS))
def test_cuda_steps_never_synchronise(name):
    device = torch.device("cuda")
    task = task_for(name)
    task.mean, task.std = MEAN.to(device), STD.to(device)
    extractor, dim = build_extractor("resnet18", "cifar")
    net = task.network(extractor, dim)
    trainer = Trainer(net, sgd(net, 0.01, 0.0), 100, 0, device, criterion=task.criterion, precision="bf16")
    gen = torch.Generator(device).manual_seed(0)
    data = IMAGES.to(device)
    trainer.train_epoch(pretext_batches(task, data, 8, 2, gen), 2, "warm-up")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(pretext_batches(task, data, 8, 3, gen))
        for inputs, targets in batches:
            with trainer.autocast():
                loss, _ = trainer.criterion(trainer.train_model(inputs), targets)
            loss.backward()
            trainer.optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
