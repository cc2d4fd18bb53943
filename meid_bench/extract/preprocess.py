"""torchvision's weights transforms on uint8 frame tensors, step for step (the values: :mod:`.catalog`).

Split in two: :func:`resize_crop` (uint8 in, uint8 out, run by the decoding workers on the CPU so that only small
frames travel) and :func:`normalize` (run on the device before the backbone). Together they compute what
``weights.transforms()`` computes on a uint8 tensor: resize in float32 with ``interpolate(mode="bilinear",
align_corners=False, antialias=True)``, round back to uint8, centre crop at ``round((size - crop) / 2)``, divide by
255, subtract the mean, divide by the std (checked against torchvision: docs/features.md, section "Extracting").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from meid_bench.errors import MeidBenchError
from meid_bench.extract.catalog import Preprocessing


def resized_size(height: int, width: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """Output (height, width) of the resize step (torchvision's ``_compute_resized_output_size`` without max_size)."""
    if len(resize) == 2:
        return int(resize[0]), int(resize[1])
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(resize[0]), int(int(resize[0]) * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize_crop(frames: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, crop_h, crop_w]: resized and centre-cropped."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected uint8 frames [N, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
    height, width = frames.shape[-2:]
    size = resized_size(height, width, pre.resize)
    if size != (height, width):
        resized = F.interpolate(frames.to(torch.float32), size=size, mode=pre.interpolation, align_corners=False,
                                antialias=pre.antialias)
        frames = resized.round_().to(torch.uint8)
    crop_h, crop_w = pre.crop
    if crop_h > size[0] or crop_w > size[1]:
        raise MeidBenchError(f"frames of {width}x{height} resize to {size[1]}x{size[0]}, smaller than the crop "
                             f"{crop_w}x{crop_h}")
    top = int(round((size[0] - crop_h) / 2.0))
    left = int(round((size[1] - crop_w) / 2.0))
    return frames[..., top:top + crop_h, left:left + crop_w].contiguous()


def normalize(frames: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 [..., 3, h, w] -> float32: scaled to [0, 1] and normalised per channel."""
    x = frames.to(torch.float32) / 255.0
    mean = torch.as_tensor(pre.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(pre.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.sub_(mean).div_(std)
