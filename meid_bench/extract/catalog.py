"""What each backbone is and what its published weights expect: plain data, no torch (verify reads it).

The weight files, URLs and preprocessing values are torchvision's (``torchvision/models/resnet.py``,
``torchvision/models/video/resnet.py`` and ``torchvision/transforms/_presets.py``, release 0.29.1):

- ImageNet classifiers (``ImageClassification``): resize the shorter side to ``resize_size`` (256 for IMAGENET1K_V1,
  232 for IMAGENET1K_V2), bilinear with antialiasing, centre crop 224, scale to [0, 1], normalise with the ImageNet
  mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
- Kinetics-400 clip models (``VideoClassification``): resize every frame to 128 x 171 (height x width), bilinear
  WITHOUT antialiasing (torchvision fixes ``antialias=False`` there, to keep the accuracy the weights were evaluated
  with), centre crop 112 x 112, scale to [0, 1], normalise with mean (0.43216, 0.394666, 0.37645) and std
  (0.22803, 0.22145, 0.216989). Their accuracy is documented for clips of 16 frames at 15 frames per second.

A file is identified by the first 8 hex digits of its sha256, the digits in its published name (torch hub's rule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from meid_bench.errors import MeidBenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
_DOWNLOADS = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Preprocessing:
    """Resize, centre crop, scale to [0, 1] and normalise, as a weight set's torchvision transform does.

    ``resize`` is ``(short_side,)`` (aspect kept: the longer side becomes ``int(short * long / short_before)``) or
    ``(height, width)``; ``crop`` is ``(height, width)``.
    """

    resize: tuple[int, ...]
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    antialias: bool = True

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (what a store records)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class WeightSet:
    """One published weight file of a backbone (named as torchvision's weights enum names it)."""

    name: str
    url: str
    preprocessing: Preprocessing

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        return self.file_name.rsplit("-", 1)[-1].split(".", 1)[0]


@dataclass(frozen=True)
class BackboneInfo:
    """A backbone: per-frame (``frame``) or per-clip (``clip``), its feature dimension, its weight sets."""

    name: str
    kind: str
    dim: int
    weights: tuple[WeightSet, ...]
    default: str
    clip_len: int = 0  # clip backbones: frames per clip ...
    clip_fps: float = 0.0  # ... taken this many per second, centred on the feature frame's instant
    description: str = field(default="", compare=False)

    def weight_set(self, name: str) -> WeightSet | None:
        wanted = self.default if name.lower() == "default" else name
        return next((w for w in self.weights if w.name.lower() == wanted.lower()), None)

    @property
    def default_weights(self) -> WeightSet:
        found = self.weight_set(self.default)
        assert found is not None
        return found


def _imagenet(name: str, file: str, resize: int) -> WeightSet:
    return WeightSet(name, _DOWNLOADS + file, Preprocessing((resize,), (224, 224), IMAGENET_MEAN, IMAGENET_STD))


def _kinetics(file: str) -> WeightSet:
    return WeightSet("KINETICS400_V1", _DOWNLOADS + file,
                     Preprocessing((128, 171), (112, 112), KINETICS_MEAN, KINETICS_STD, antialias=False))


BACKBONES: dict[str, BackboneInfo] = {info.name: info for info in (
    BackboneInfo("resnet50", "frame", 2048, (_imagenet("IMAGENET1K_V1", "resnet50-0676ba61.pth", 256),
                                             _imagenet("IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 232)),
                 "IMAGENET1K_V2", description="ImageNet ResNet-50, one 2048-d vector per frame"),
    BackboneInfo("resnet101", "frame", 2048, (_imagenet("IMAGENET1K_V1", "resnet101-63fe2227.pth", 256),
                                              _imagenet("IMAGENET1K_V2", "resnet101-cd907fc2.pth", 232)),
                 "IMAGENET1K_V2", description="ImageNet ResNet-101, one 2048-d vector per frame"),
    BackboneInfo("r2plus1d_18", "clip", 512, (_kinetics("r2plus1d_18-91a641e6.pth"),), "KINETICS400_V1",
                 clip_len=16, clip_fps=15.0, description="Kinetics-400 R(2+1)D-18, one 512-d vector per 16-frame clip"),
    BackboneInfo("r3d_18", "clip", 512, (_kinetics("r3d_18-b3b3357e.pth"),), "KINETICS400_V1",
                 clip_len=16, clip_fps=15.0, description="Kinetics-400 R3D-18, one 512-d vector per 16-frame clip"),
    BackboneInfo("mc3_18", "clip", 512, (_kinetics("mc3_18-a90a0ba3.pth"),), "KINETICS400_V1",
                 clip_len=16, clip_fps=15.0, description="Kinetics-400 MC3-18, one 512-d vector per 16-frame clip"),
)}


def backbone_info(name: str) -> BackboneInfo:
    try:
        return BACKBONES[name]
    except KeyError:
        raise MeidBenchError(f"--backbone {name!r}: choose one of {', '.join(BACKBONES)}") from None


def known_weight_file(sha256: str) -> tuple[BackboneInfo, WeightSet] | None:
    """The backbone and weight set whose published file has this sha256 (by its published prefix), if any."""
    for info in BACKBONES.values():
        for weights in info.weights:
            if sha256.startswith(weights.sha256_prefix):
                return info, weights
    return None
