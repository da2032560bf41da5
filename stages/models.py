"""Backbones from torchvision, split into a feature extractor and a linear head.

`model.arch` names any torchvision classification model. The head is the model's last `nn.Linear`; replacing
it by `nn.Identity` leaves the feature extractor, so the same split works for ResNets, MobileNets,
EfficientNets, VGG, ConvNeXt and more. `model.stem: cifar` makes the first strided convolution a 3x3 stride-1
one and drops the first max-pool, the usual change for 32x32 images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from stages.common import UserError, save_torch

STEMS = ("cifar", "imagenet")


def classification_models() -> list[str]:
    return sorted(tvm.list_models(module=tvm))


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    return module, leaf


def _cifar_stem(model: nn.Module) -> None:
    conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and max(conv[1].stride) > 1:
        name, old = conv
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=old.bias is not None))
    pool = next((n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)), None)
    if pool is not None:
        parent, leaf = _parent(model, pool)
        setattr(parent, leaf, nn.Identity())


def build_extractor(arch: str, stem: str) -> tuple[nn.Module, int]:
    """A randomly initialised feature extractor and the size of the features it returns."""
    if arch not in classification_models():
        raise UserError(f"param 'model.arch' is {arch!r}: not a torchvision classification model; "
                        f"choose one of {', '.join(classification_models())}")
    if stem not in STEMS:
        raise UserError(f"param 'model.stem' is {stem!r}: choose one of {', '.join(STEMS)}")
    model = tvm.get_model(arch, weights=None)
    if stem == "cifar":
        _cifar_stem(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"param 'model.arch' is {arch!r}: it has no final nn.Linear head to replace")
    parent, leaf = _parent(model, linears[-1])
    feat_dim = getattr(parent, leaf).in_features
    setattr(parent, leaf, nn.Identity())
    return model, feat_dim


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


def load_extractor(path: Path, arch: str, stem: str) -> tuple[nn.Module, int]:
    """Build the extractor for (arch, stem) and load `path` into it, refusing any mismatch."""
    if not path.exists():
        raise UserError(f"checkpoint {path} not found: run its stage first (`dvc repro`)")
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
    extractor, feat_dim = build_extractor(arch, stem)
    extractor.load_state_dict(ckpt["state_dict"], strict=True)
    return extractor, feat_dim
