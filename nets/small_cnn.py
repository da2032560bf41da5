"""An example of your own backbone: a small VGG-style CNN (`model.arch: nets.small_cnn:build`).

Any function of no arguments that returns an `nn.Module` works, if the module's last `nn.Linear` is the
classification head applied to flat features: everything before it becomes the feature extractor.
"""

from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


def build(width: int = 32, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(_block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))
