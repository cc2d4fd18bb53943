"""The backbones, written natively in torch with torchvision's module and parameter names.

torchvision itself is not a dependency (its wheels are built against one exact torch build each), but its published
weight files load into these modules with ``load_state_dict(strict=True)``: same modules, same names, same shapes,
same forward computation (checked against torchvision: docs/features.md, section "Extracting"). ``forward`` returns
the pooled features (the input of ``fc``); ``classify`` adds ``fc`` (the weights' own classifier).

``width`` (channels of the first stage, 64 in the published architectures) and ``blocks`` (residual blocks per
stage) exist so that tests can run the same code on tiny random networks; published weights need the defaults.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from meid_bench.extract.catalog import backbone_info


def _initialise(model: nn.Module, conv: type, norm: type, linear_std: float | None = None) -> None:
    """torchvision's initialisation (what random-weight runs use, with :func:`_scale_residual_branches`)."""
    for m in model.modules():
        if isinstance(m, conv):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, norm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


class Bottleneck(nn.Module):
    """ResNet-50/101 residual block: 1x1 reduce, 3x3 (carries the stride), 1x1 expand."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet ResNet with bottleneck blocks: [N, 3, H, W] -> pooled features [N, 32 * width]."""

    def __init__(self, blocks: Sequence[int], num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, blocks[0], 1)
        self.layer2 = self._make_layer(2 * width, blocks[1], 2)
        self.layer3 = self._make_layer(4 * width, blocks[2], 2)
        self.layer4 = self._make_layer(8 * width, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * Bottleneck.expansion, num_classes)
        self.dim = 8 * width * Bottleneck.expansion
        _initialise(self, nn.Conv2d, nn.BatchNorm2d)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward(x))


# -- Kinetics clip models: torchvision's VideoResNet family ---------------------------------------------------------

class Conv3DSimple(nn.Conv3d):
    """Full 3x3x3 convolution (R3D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride, padding=1, bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv2Plus1D(nn.Sequential):
    """1x3x3 spatial convolution to ``midplanes`` channels, then 3x1x1 temporal convolution (R(2+1)D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                      bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0),
                      bias=False))

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    """1x3x3 convolution, no temporal extent (MC3's upper stages)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                         padding=(0, 1, 1), bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return 1, stride, stride


class VideoBasicBlock(nn.Module):
    """Two convolutions with a residual connection; ``midplanes`` keeps R(2+1)D's parameter count equal to R3D's."""

    def __init__(self, inplanes: int, planes: int, conv: Callable[..., nn.Module], stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
        self.conv1 = nn.Sequential(conv(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(planes, planes, midplanes), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


def _basic_stem(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                         nn.BatchNorm3d(width), nn.ReLU(inplace=True))


def _r2plus1d_stem(width: int) -> nn.Sequential:
    mid = 45 * width // 64
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width), nn.ReLU(inplace=True))


class VideoResNet(nn.Module):
    """Clip model: [N, 3, T, H, W] -> pooled features [N, 8 * width]."""

    def __init__(self, convs: Sequence[Callable[..., nn.Module]], blocks: Sequence[int],
                 stem: Callable[[int], nn.Module], num_classes: int = 400, width: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.stem = stem(width)
        self.layer1 = self._make_layer(convs[0], width, blocks[0], 1)
        self.layer2 = self._make_layer(convs[1], 2 * width, blocks[1], 2)
        self.layer3 = self._make_layer(convs[2], 4 * width, blocks[2], 2)
        self.layer4 = self._make_layer(convs[3], 8 * width, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        self.dim = 8 * width
        _initialise(self, nn.Conv3d, nn.BatchNorm3d, linear_std=0.01)

    def _make_layer(self, conv: Callable[..., nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=conv.downsample_stride(stride), bias=False),
                nn.BatchNorm3d(planes))
        layers = [VideoBasicBlock(self.inplanes, planes, conv, stride, downsample)]
        self.inplanes = planes
        layers += [VideoBasicBlock(planes, planes, conv) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward(x))


_BUILDERS: dict[str, Callable[[int, Sequence[int] | None], nn.Module]] = {
    "resnet50": lambda width, blocks: ResNet(blocks or (3, 4, 6, 3), width=width),
    "resnet101": lambda width, blocks: ResNet(blocks or (3, 4, 23, 3), width=width),
    "r2plus1d_18": lambda width, blocks: VideoResNet([Conv2Plus1D] * 4, blocks or (2, 2, 2, 2), _r2plus1d_stem,
                                                     width=width),
    "r3d_18": lambda width, blocks: VideoResNet([Conv3DSimple] * 4, blocks or (2, 2, 2, 2), _basic_stem, width=width),
    "mc3_18": lambda width, blocks: VideoResNet([Conv3DSimple] + [Conv3DNoTemporal] * 3, blocks or (2, 2, 2, 2),
                                                _basic_stem, width=width),
}


def build_backbone(name: str, width: int = 64, blocks: Sequence[int] | None = None, seed: int = 0) -> nn.Module:
    """A backbone of the catalogue, randomly initialised from ``seed`` (the global RNG is left untouched), in
    eval mode. Load published weights with :func:`meid_bench.extract.weights.load_weights`."""
    backbone_info(name)  # a clear error for an unknown name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[name](int(width), None if blocks is None else tuple(int(b) for b in blocks))
    _scale_residual_branches(model)
    return model.eval()


def _scale_residual_branches(model: nn.Module) -> None:
    """The last norm of every residual branch starts at 1 / sqrt(number of residual blocks), not 1. Why: a random
    network runs in eval mode, where each norm (running mean 0, variance 1) passes its input through, so every block
    at full scale multiplies the variance by about two; the randomly initialised ResNet-101 (``--weights random``,
    for tests and timing) then gave features up to 1.6e5, beyond float16's 65504. Scaled, the variance grows by at
    most a factor of about e over the whole network, at any depth, and every block still shapes the features.
    Loaded weights replace all of it."""
    last_norms = [module.bn3 if isinstance(module, Bottleneck) else module.conv2[-1]
                  for module in model.modules() if isinstance(module, (Bottleneck, VideoBasicBlock))]
    for norm in last_norms:
        nn.init.constant_(norm.weight, 1.0 / math.sqrt(len(last_norms)))
