"""A CPU-sized backbone (`model.arch: nets.fast_cnn:build`), after Keller Jordan's airbench CIFAR-10 network.

Three groups of (conv, max-pool, BatchNorm, ReLU, conv, BatchNorm, ReLU): each group's second convolution
runs at the pooled resolution, which is what makes it cheap. At widths 32/64/128 a 32 px image costs about
24 M multiply-adds, a sixth of a half-stem ResNet-18, and the global max-pool leaves 128 features.
`half` halves every width (16/32/64, stem 16: a quarter of the multiply-adds, 74 k weights) for slower CPUs.
"""

from torch import nn


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _group(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), *_conv_bn(cout, cout))


def build(widths: tuple[int, int, int] = (32, 64, 128), stem: int = 24, num_classes: int = 10) -> nn.Module:
    a, b, c = widths
    return nn.Sequential(*_conv_bn(3, stem), _group(stem, a), _group(a, b), _group(b, c),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def half(num_classes: int = 10) -> nn.Module:
    """Widths 16/32/64, stem 16 (`model.arch: nets.fast_cnn:half`)."""
    return build((16, 32, 64), 16, num_classes)
