import copy
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

import torch.nn.functional as F

from selfsup.training.augment import crop, crop_flip_indices, normalize, random_crop_flip
from selfsup.training.engine import Trainer, chunks, classification_metrics, index_batches, sgd, warmup_cosine
from selfsup.core.params import UserError


def test_classification_metrics_known_values():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(torch.as_tensor(preds), 3).float() * 5
    m = classification_metrics(logits, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"))
    # class 0: P=1/2 R=1/2; class 1: P=2/3 R=1; class 2: P=1 R=1/2
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_collapsed_prediction_gives_chance_recall():
    labels = np.arange(100) % 10
    m = classification_metrics(torch.zeros(100, 10).index_fill_(1, torch.tensor([3]), 1.0), labels)
    assert m["recall_macro"] == pytest.approx(0.1)


def test_index_batches_cover_every_example_once_per_pass():
    g = torch.Generator().manual_seed(0)
    batches = list(index_batches(10, 4, 5, g))
    assert all(len(b) == 4 for b in batches)
    flat = torch.cat(batches)
    assert sorted(flat[:10].tolist()) == list(range(10))
    assert len(list(index_batches(3, 8, 2, g))[0]) == 3


def test_warmup_cosine_shape():
    f = warmup_cosine(100, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)


def test_crop_and_flip():
    img = torch.arange(2 * 3 * 6 * 6).view(2, 3, 6, 6)
    out = crop(img, torch.tensor([0, 2]), torch.tensor([1, 3]), 3, 2)
    assert torch.equal(out[0], img[0, :, 0:3, 1:3]) and torch.equal(out[1], img[1, :, 2:5, 3:5])
    aug = random_crop_flip(img.float(), 0, torch.Generator().manual_seed(0))
    for a, b in zip(aug, img.float()):
        assert torch.equal(a, b) or torch.equal(a, b.flip(2))


def test_crop_and_flip_by_one_gather_cut_what_pad_crop_and_flip_cut():
    """The one-gather augmentation gives, pixel for pixel and in uint8, what reflect-padding, cropping and
    flipping in turn give for the same random draws (top, left, then flip), and a channels_last batch."""
    images = torch.randint(0, 256, (64, 3, 10, 12), dtype=torch.uint8)
    for pad in (0, 1, 4):
        out = random_crop_flip(images, pad, torch.Generator().manual_seed(pad))
        g = torch.Generator().manual_seed(pad)
        expected = images
        if pad:
            padded = F.pad(images.float(), (pad,) * 4, mode="reflect").to(torch.uint8)
            top = torch.randint(0, 2 * pad + 1, (64,), generator=g)
            left = torch.randint(0, 2 * pad + 1, (64,), generator=g)
            expected = torch.stack([p[:, t:t + 10, s:s + 12] for p, t, s in zip(padded, top, left)])
        flip = torch.rand(64, generator=g) < 0.5
        expected = torch.where(flip.view(64, 1, 1, 1), expected.flip(3), expected)
        assert out.dtype == torch.uint8 and torch.equal(out, expected)
        assert out.is_contiguous(memory_format=torch.channels_last)
    rows, cols = crop_flip_indices(500, 10, 12, 4, torch.Generator().manual_seed(0), "cpu")
    assert rows.min() == 0 and rows.max() == 9 and cols.min() == 0 and cols.max() == 11


def test_normalize_keeps_or_converts_the_layout_and_never_the_values():
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    mean, std = torch.tensor([100.0, 120.0, 140.0]) / 255, torch.tensor([0.2, 0.25, 0.3])
    kept = normalize(images, mean, std)
    planar = normalize(images, mean, std, memory_format=torch.contiguous_format)
    assert kept.is_contiguous(memory_format=torch.channels_last) and planar.is_contiguous()
    expected = (images.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.equal(kept, expected) and torch.equal(planar, expected)


def _toy(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


def test_trainer_learns_a_separable_problem():
    torch.manual_seed(0)
    x, y = _toy()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer(model, sgd(model, 0.1, 0.0), 200, 10, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        stats = trainer.train_epoch(((x[i], y[i]) for i in index_batches(len(x), 32, 40, g)), 40, "toy")
    assert stats["score"] > 0.9 and stats["images_per_s"] > 0
    logits = trainer.predict(chunks(x, 100, lambda b: b))
    assert classification_metrics(logits, y.numpy())["accuracy"] > 0.9


def test_nan_loss_stops_with_a_message():
    x, y = _toy(32)
    model = nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    trainer = Trainer(model, sgd(model, 0.1, 0.0), 10, 0, torch.device("cpu"))
    with pytest.raises(UserError, match="learning rate"):
        trainer.train_epoch([(x, y)], 1, "toy")


def test_divergence_stops_within_a_few_steps_not_at_the_end_of_the_epoch():
    x, y = _toy(32)
    model = nn.Linear(8, 2)
    trainer = Trainer(model, sgd(model, 1e30, 0.0), 10 ** 6, 0, torch.device("cpu"))  # a learning rate that explodes
    drawn = []

    def batches():
        for step in range(1000):
            drawn.append(step)
            yield x * 1e10, y

    with pytest.raises(UserError, match="loss became .*learning rate is likely too high"):
        trainer.train_epoch(batches(), 1000, "toy")
    assert len(drawn) <= 25


def _toy_run(compile, epochs: int = 4) -> tuple[list[float], Trainer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    trainer = Trainer(model, sgd(model, 0.1, 0.0), 20, 0, torch.device("cpu"), compile=compile)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [trainer.train_epoch(((x, y) for _ in range(5)), 5, "t")["loss"] for _ in range(epochs)], trainer


def test_compiled_training_gives_the_eager_result():
    eager, _ = _toy_run(False)
    assert eager[-1] < eager[0]
    compiled, trainer = _toy_run(True)
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert trainer.compiled is True and trainer.compile_seconds > 0  # its first step, compiling


def test_a_compiled_run_resumes_to_the_uninterrupted_result():
    """A resume checkpoint (Trainer.state_dict: the model's own keys, not the compiled wrapper's) taken from
    a compiled run loads into a new compiled trainer, which continues to exactly the uninterrupted losses."""
    whole, _ = _toy_run(True)
    first, trainer = _toy_run(True, epochs=2)
    state = copy.deepcopy(trainer.state_dict())
    assert not any(key.startswith("_orig_mod") for key in state["model"])
    _, resumed = _toy_run(True, epochs=0)
    resumed.load_state_dict(state)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    rest = [resumed.train_epoch(((x, y) for _ in range(5)), 5, "t")["loss"] for _ in range(2)]
    assert first + rest == whole


def test_compile_auto_measures_once_per_machine_and_network_and_leaves_no_trace(monkeypatch, tmp_path):
    """compile: auto measures eager and compiled steps at the first batch, caches the verdict, and trains as
    the verdict's mode trains alone: to the bit when eager wins (the measuring changed no weight, statistic
    or random state), within the compiled tolerance when compile wins. A second run reads the verdict."""
    from selfsup.training import compile_choice
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    losses, trainer = _toy_run("auto")
    assert trainer.compiled in (True, False) and trainer.compile_seconds > 0
    entries = json.loads((tmp_path / "selfsup" / "compile.json").read_text())
    assert len(entries) == 1 and entries[0]["compile"] == trainer.compiled
    key = entries[0]["key"]
    assert key["network"].startswith("Sequential:") and key["example"] == "(8,) float32 contiguous"
    assert entries[0]["eager_step_s"] > 0 and entries[0]["compiled_step_s"] > 0
    reference, _ = _toy_run(trainer.compiled)
    assert losses == (reference if not trainer.compiled else pytest.approx(reference, rel=1e-4))

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")
    monkeypatch.setattr(compile_choice, "measure", no_measuring)
    for verdict in (True, False):  # a cached verdict is followed, whichever it is
        entries[0]["compile"] = verdict
        (tmp_path / "selfsup" / "compile.json").write_text(json.dumps(entries))
        losses, trainer = _toy_run("auto", epochs=2)
        assert trainer.compiled is verdict and trainer.compile_verdict["compile"] is verdict
        reference, _ = _toy_run(verdict, epochs=2)
        assert losses == (reference if not verdict else pytest.approx(reference, rel=1e-4))


def _conv_run(precision: str) -> tuple[float, torch.Tensor]:
    """A small CNN fine-tuned a few epochs on synthetic class images; its validation macro-F1 and logits."""
    from selfsup.training.models import Classifier, build_extractor
    from tests.synthetic import images
    labels = np.arange(240) % 10
    x = torch.from_numpy(images(labels, 0)).float() / 255
    y = torch.from_numpy(labels)
    torch.manual_seed(0)
    extractor, dim = build_extractor("nets.small_cnn:build", "imagenet")
    model = Classifier(extractor, dim, 10)
    trainer = Trainer(model, sgd(model, 0.05, 0.0), 60, 5, torch.device("cpu"), precision=precision)
    g = torch.Generator().manual_seed(0)
    train, val = slice(0, 200), slice(200, 240)
    for _ in range(3):
        trainer.train_epoch(((x[train][i], y[train][i]) for i in index_batches(200, 20, 20, g)), 20, precision)
    logits = trainer.predict(chunks(x[val], 20, lambda b: b))
    return classification_metrics(logits, labels[val])["f1_macro"], logits


def test_bf16_and_fp32_runs_reach_the_same_validation_f1():
    f1_fp32, logits32 = _conv_run("fp32")
    f1_bf16, logits16 = _conv_run("bf16")
    assert f1_fp32 > 0.5  # it learned something to compare
    assert abs(f1_bf16 - f1_fp32) <= 0.01
    assert logits16.dtype == logits32.dtype == torch.float32  # outputs leave in fp32 whatever the precision


def test_precision_auto_on_a_cpu_is_bf16_only_where_measured_faster(monkeypatch, tmp_path, capsys):
    """auto on a CPU: fp32 where it has no bf16 instructions (nothing measured); where it has them, bf16 only when
    the measurement says a step is faster, and fp32 without one. An explicit bf16 is kept, with a warning where
    the CPU would emulate it. The same outcome on every CPU: the instructions and the timings are stubbed."""
    from selfsup.training import engine
    cpu = torch.device("cpu")
    has_bf16 = engine.cpu_has_bf16
    asked = []

    def measured(answer):
        return lambda: asked.append(answer) or answer
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    assert engine.resolve_precision("auto", cpu, measured(True)) == "fp32" and not asked  # no instructions: no timing
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: True)
    assert engine.resolve_precision("auto", cpu, measured(True)) == "bf16"
    assert engine.resolve_precision("auto", cpu, measured(False)) == "fp32"
    assert engine.resolve_precision("auto", cpu) == "fp32"  # nothing measured: the safe choice
    assert engine.resolve_precision("fp32", cpu, measured(True)) == "fp32" and asked == [True, False]
    assert engine.resolve_precision("bf16", cpu) == "bf16" and "warning" not in capsys.readouterr().err
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    assert engine.resolve_precision("bf16", cpu) == "bf16"
    assert "emulated" in capsys.readouterr().err
    with pytest.raises(UserError, match="param 'precision' is 'fp16': on mps only fp32"):
        engine.resolve_precision("fp16", torch.device("mps"))
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert has_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert not has_bf16(info)


@pytest.mark.parametrize("bf16_seconds, expected", [(0.5, True), (0.97, False), (2.0, False)])
def test_the_precision_verdict_follows_the_timing_and_is_cached(monkeypatch, tmp_path, bf16_seconds, expected):
    """bf16 wins only when its step is at least the margin faster; the verdict is measured once per machine and
    network, then read from $XDG_CACHE_HOME/selfsup/precision.json."""
    from selfsup.loop import precision_choice
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def timing(*args):
        calls.append(args)
        return {"fp32": 1.0, "bf16": bf16_seconds}
    monkeypatch.setattr(precision_choice, "step_seconds", timing)
    ask = precision_choice.bf16_faster("nets.small_cnn:build", "cifar", 32, 10, 64, torch.device("cpu"))
    assert ask() is expected and ask() is expected and len(calls) == 1
    entry = json.loads((tmp_path / "selfsup" / "precision.json").read_text())[0]
    assert entry["bf16"] is expected and entry["key"]["network"] == "nets.small_cnn:build (cifar stem)"
    other = precision_choice.bf16_faster("nets.small_cnn:build", "cifar", 32, 10, 128, torch.device("cpu"))
    other()
    assert len(calls) == 2  # another batch: measured anew


def test_the_precision_measurement_times_both_precisions():
    """The real timing on this CPU (bf16 is emulated where it has no instructions, so only that it runs is
    asserted, never which wins): both precisions get a positive step time."""
    from selfsup.loop import precision_choice
    seconds = precision_choice.step_seconds("nets.small_cnn:build", "cifar", 16, 10, 8, torch.device("cpu"))
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_precision_auto_on_cuda_follows_native_bf16():
    from selfsup.training import engine
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert engine.resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable CUDA GPU")
def test_device_cuda_without_a_gpu_names_the_driver_problem():
    from selfsup.training.devices import resolve_device
    with pytest.raises(UserError, match=r"param 'device' is 'cuda' but CUDA cannot be used \(.+\): fix the driver"):
        resolve_device("cuda")


def test_the_full_profile_on_a_cpu_warns_with_an_estimate(capsys):
    from selfsup.training.engine import slow_hint
    cpu = torch.device("cpu")
    assert slow_hint({"profile_name": "cpu"}, cpu) is None
    hint = slow_hint({"profile_name": "full"}, cpu)
    assert "-S profile=cpu" in hint
    x, y = _toy()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer(model, sgd(model, 0.1, 0.0), 1000, 0, cpu, slow_hint=hint)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # warned once, not every epoch
        trainer.train_epoch(((x[i], y[i]) for i in index_batches(len(x), 32, 8, g)), 8, "toy")
    err = capsys.readouterr().err
    assert err.count("warning: about ") == 1 and "min of training at this speed" in err and hint in err
