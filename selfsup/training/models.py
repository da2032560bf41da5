"""Backbones, split into a feature extractor and a linear head.

`model.arch` names any torchvision classification model, or `module:function` for your own network (a
function of no arguments, in an importable module, e.g. `nets.small_cnn:build` from nets/ in this
repository, which the training stages depend on). The head is the model's last `nn.Linear`; replacing it
by `nn.Identity` leaves the feature extractor, so the same split works for ResNets, MobileNets,
EfficientNets, VGG, ConvNeXt and your own networks built the same way. `model.stem: cifar` makes the first
strided convolution a 3x3 stride-1 one and drops the first max-pool, the usual change for 32x32 images;
`half` makes it 3x3 stride 2 and drops the max-pool (a quarter of the cifar stem's compute: 32 px images
reach the first block at 16x16, patches of context prediction at half their size); `imagenet` keeps the
network as built. A network that cannot take the dataset's image size (vision
transformers want 224 px) is refused with a message before training starts.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from selfsup.core import paths
from selfsup.core.files import save_torch
from selfsup.core.params import STEMS, UserError

# Tested with both stems (tests/test_models.py); any other torchvision classification model is tried.
TESTED = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0")
CUSTOM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def classification_models() -> list[str]:
    from torchvision import models as tvm  # on use: importing torchvision costs a stage process about 1 s, and a
    # network of nets/ (the cpu profile's) never needs it
    return sorted(tvm.list_models(module=tvm))


def _supported() -> str:
    others = [m for m in classification_models() if m not in TESTED]
    return (f"tested: {', '.join(TESTED)}; also any torchvision classification model ({', '.join(others)}); "
            f"or module:function for your own network (see README, 'Backbones')")


def _construct(arch: str) -> nn.Module:
    if CUSTOM.match(arch):
        module_name, function = arch.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UserError(f"param 'model.arch' is {arch!r}: cannot import {module_name} ({e}); put it under "
                            f"nets/ and write nets.<file>:<function>") from e
        build = getattr(module, function, None)
        if not callable(build):
            raise UserError(f"param 'model.arch' is {arch!r}: {module_name} has no function {function}")
        model = build()
        if not isinstance(model, nn.Module):
            raise UserError(f"param 'model.arch' is {arch!r}: {function}() returned {type(model).__name__}, "
                            f"not a torch.nn.Module")
        return model
    if arch not in classification_models():
        raise UserError(f"param 'model.arch' is {arch!r}: not a torchvision classification model; {_supported()}")
    from torchvision import models as tvm
    return tvm.get_model(arch, weights=None)


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    return module, leaf


def _small_stem(model: nn.Module, stride: int) -> None:
    """A strided first convolution becomes 3x3 with `stride`, and the max-pool that follows such a stem goes."""
    conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or max(conv[1].stride) == 1:
        return  # already full resolution (VGG-like, or your own network): nothing to change
    name, old = conv
    parent, leaf = _parent(model, name)
    setattr(parent, leaf, nn.Conv2d(old.in_channels, old.out_channels, 3, stride, 1, bias=old.bias is not None))
    pool = next((n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)), None)
    if pool is not None:
        parent, leaf = _parent(model, pool)
        setattr(parent, leaf, nn.Identity())


def last_adaptive_pool(module: nn.Module) -> nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d | None:
    """The last adaptive pooling layer of `module`, where a backbone reduces its feature map to a vector
    (None if it has none): spatial fusion and the grid probe read the map it receives."""
    pools = [m for m in module.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]
    return pools[-1] if pools else None


class PoolInput:
    """The map a pool (see `last_adaptive_pool`) receives, read through a forward pre-hook: `read(run)`
    calls `run()` and returns the pool's input from that call; outside `read` the hook keeps nothing, so
    the model runs alone (the per-epoch probe) without holding a map. A plain object, not a module: a
    deep copy of the model copies this small reader, not whatever owns it."""

    def __init__(self, pool: nn.Module):
        self._map: torch.Tensor | None = None
        self._reading = False
        pool.register_forward_pre_hook(self._keep)

    def _keep(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if self._reading:
            self._map = args[0]

    def read(self, run: Callable[[], object]) -> torch.Tensor:
        self._reading = True
        try:
            run()
        finally:
            self._reading = False
        maps, self._map = self._map, None
        return maps


def build_extractor(arch: str, stem: str, image_size: int | None = None) -> tuple[nn.Module, int]:
    """A randomly initialised feature extractor and the size of the features it returns. With `image_size`,
    one forward pass of two such images checks that the network takes them and returns flat features."""
    if stem not in STEMS:
        raise UserError(f"param 'model.stem' is {stem!r}: choose one of {', '.join(STEMS)}")
    model = _construct(arch)
    if stem != "imagenet":
        _small_stem(model, 1 if stem == "cifar" else 2)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"param 'model.arch' is {arch!r}: it has no final nn.Linear head to split off; {_supported()}")
    parent, leaf = _parent(model, linears[-1])
    feat_dim = getattr(parent, leaf).in_features
    setattr(parent, leaf, nn.Identity())
    if image_size is not None:
        _check_input(model, arch, feat_dim, image_size)
    return model, feat_dim


@torch.no_grad()
def _check_input(model: nn.Module, arch: str, feat_dim: int, image_size: int) -> None:
    model.eval()
    try:
        out = model(torch.zeros(2, 3, image_size, image_size))
    except Exception as e:  # whatever the network raises on a wrong size
        raise UserError(f"param 'model.arch' is {arch!r}: it cannot take {image_size}px images "
                        f"({str(e).splitlines()[0][:120]}); choose another or set data.image_size") from e
    finally:
        model.train()
    if not (isinstance(out, torch.Tensor) and out.shape == (2, feat_dim)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"param 'model.arch' is {arch!r}: its features come out as {shape}, not (N, {feat_dim}); "
                        f"the last nn.Linear must be the head, applied to flat features")


class Classifier(nn.Module):
    """A feature extractor followed by one linear layer."""

    def __init__(self, features: nn.Module, feat_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.head = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def save_extractor(extractor: nn.Module, arch: str, stem: str, feat_dim: int, path: Path, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in extractor.state_dict().items()}
    save_torch({"arch": arch, "stem": stem, "feat_dim": feat_dim, "state_dict": state, **extra}, path)


def load_extractor(path: Path, arch: str, stem: str, pretext: str | None = None) -> tuple[nn.Module, int]:
    """Build the extractor for (arch, stem) and load `path` into it, refusing any mismatch (also of the
    pretext task that made it, when `pretext` is given)."""
    if not path.exists():
        raise paths.missing(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path} could not be loaded safely ({str(e).splitlines()[0]}): "
                        f"it is corrupt or not ours; delete it and re-run its stage") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} is not a feature-extractor checkpoint; re-run its stage")
    if (ckpt.get("arch"), ckpt.get("stem")) != (arch, stem):
        raise UserError(f"checkpoint {path} is for model.arch={ckpt.get('arch')} model.stem={ckpt.get('stem')}, "
                        f"but params say {arch}/{stem}: re-run `dvc repro` so it is rebuilt")
    if pretext is not None and ckpt.get("pretext") != pretext:
        raise UserError(f"checkpoint {path} was pretrained with pretext.task={ckpt.get('pretext')}, but params say "
                        f"{pretext}: re-run `dvc repro` so it is rebuilt")
    extractor, feat_dim = build_extractor(arch, stem)
    extractor.load_state_dict(ckpt["state_dict"], strict=True)
    return extractor, feat_dim
