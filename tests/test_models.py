import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.training.models import TESTED, Classifier, build_extractor, load_extractor, save_extractor
from selfsup.core.params import UserError

ROOT = Path(__file__).resolve().parents[1]
FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v3_large": 1280,
            "mobilenet_v3_small": 1024, "efficientnet_b0": 1280}


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("mobilenet_v3_small", 1024)])
def test_extractor_returns_features(arch, dim):
    extractor, feat_dim = build_extractor(arch, "cifar")
    assert feat_dim == dim
    extractor.eval()
    assert extractor(torch.randn(2, 3, 32, 32)).shape == (2, dim)


@pytest.mark.parametrize("arch", TESTED)
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_supported_backbones_split_and_take_small_images(arch, stem):
    extractor, feat_dim = build_extractor(arch, stem, 32)  # the dry run checks 32 px inputs
    assert feat_dim == FEATURES[arch]
    model = Classifier(extractor, feat_dim, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    first = next(m for m in extractor.modules() if isinstance(m, nn.Conv2d))
    assert first.stride == ((1, 1) if stem == "cifar" else (2, 2))


def test_own_network_by_module_and_function():
    extractor, feat_dim = build_extractor("nets.small_cnn:build", "cifar", 32)
    assert feat_dim == 128
    assert sum(isinstance(m, nn.MaxPool2d) for m in extractor.modules()) == 3  # stride-1 stem: left as built
    with pytest.raises(UserError, match="cannot import nets.nothing"):
        build_extractor("nets.nothing:build", "cifar")
    with pytest.raises(UserError, match="has no function missing"):
        build_extractor("nets.small_cnn:missing", "cifar")


def test_the_cpu_profiles_backbone_is_fast_cnn_at_half_width():
    full, full_dim = build_extractor("nets.fast_cnn:build", "cifar", 32)
    half, half_dim = build_extractor("nets.fast_cnn:half", "cifar", 32)
    assert (full_dim, half_dim) == (128, 64)
    weights = [sum(p.numel() for p in net.parameters()) for net in (full, half)]
    assert 3.5 < weights[0] / weights[1] < 4.5  # every width halved: about a quarter of the weights
    assert half(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_unsupported_networks_say_why():
    with pytest.raises(UserError, match="cannot take 32px images"):
        build_extractor("vit_b_16", "imagenet", 32)
    with pytest.raises(UserError, match="no final nn.Linear head.*tested: resnet18"):
        build_extractor("squeezenet1_0", "imagenet")


def test_cifar_stem_keeps_resolution():
    extractor, _ = build_extractor("resnet18", "cifar")
    assert extractor.conv1.stride == (1, 1) and extractor.conv1.kernel_size == (3, 3)
    assert isinstance(extractor.maxpool, nn.Identity)
    imagenet, _ = build_extractor("resnet18", "imagenet")
    assert imagenet.conv1.stride == (2, 2)


def test_unknown_arch_lists_supported():
    with pytest.raises(UserError, match="model.arch.*resnet18"):
        build_extractor("resnet19", "cifar")


def test_pretrained_weights_arrive_in_classifier(tmp_path):
    torch.manual_seed(0)
    extractor, dim = build_extractor("resnet18", "imagenet")
    with torch.no_grad():
        for p in extractor.parameters():
            p.add_(1.0)  # something a fresh init would never produce
    save_extractor(extractor, "resnet18", "imagenet", dim, tmp_path / "e.pt")
    loaded, _ = load_extractor(tmp_path / "e.pt", "resnet18", "imagenet")
    model = Classifier(loaded, dim, 10)
    for (name, a), b in zip(extractor.state_dict().items(), model.features.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_for_other_arch_says_so(tmp_path):
    extractor, dim = build_extractor("resnet18", "imagenet")
    save_extractor(extractor, "resnet18", "imagenet", dim, tmp_path / "e.pt")
    with pytest.raises(UserError, match="model.arch=resnet18"):
        load_extractor(tmp_path / "e.pt", "resnet18", "cifar")


def test_checkpoint_of_another_pretext_says_so(tmp_path):
    extractor, dim = build_extractor("resnet18", "imagenet")
    save_extractor(extractor, "resnet18", "imagenet", dim, tmp_path / "e.pt", pretext="rotation")
    assert load_extractor(tmp_path / "e.pt", "resnet18", "imagenet", "rotation")[1] == dim
    with pytest.raises(UserError, match="pretrained with pretext.task=rotation, but params say context"):
        load_extractor(tmp_path / "e.pt", "resnet18", "imagenet", "context")


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_extractor(tmp_path / "none.pt", "resnet18", "cifar")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="could not be loaded"):
        load_extractor(tmp_path / "bad.pt", "resnet18", "cifar")


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_crafted_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Exploit()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(UserError, match="could not be loaded safely"):
        load_extractor(path, "resnet18", "cifar")


def test_a_stage_on_a_network_of_nets_never_imports_torchvision():
    # importing torchvision loads its models and ops (and torch._dynamo): about 1 s of every stage process's
    # start, for the cpu profile's network, which is not torchvision's
    code = ("import sys, torch, stages.finetune, stages.pretrain, stages.linear_probe, stages.compare\n"
            "from selfsup.training.models import build_extractor\n"
            "from selfsup.training.devices import numerics\n"
            "build_extractor('nets.fast_cnn:half', 'cifar')\n"
            "assert numerics(torch.device('cpu'), 'fp32', 1, False)['torchvision']\n"
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_recorded_torchvision_version_is_its_own(monkeypatch):
    import torchvision

    from selfsup.training.devices import torchvision_version
    monkeypatch.delitem(sys.modules, "torchvision")  # read from its version.py, as a stage does
    assert torchvision_version() == torchvision.__version__
