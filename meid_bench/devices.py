"""The one reading of a ``--device`` option (training, sweeps, feature extraction)."""

from __future__ import annotations

import re

import torch

from meid_bench.errors import MeidBenchError


def resolve_device(name: str) -> torch.device:
    """``auto`` (the current GPU if one is visible, else the CPU), ``cpu``, ``cuda`` (the current GPU) or
    ``cuda:N`` (GPU N of those PyTorch sees: as ``nvidia-smi`` numbers them unless CUDA_VISIBLE_DEVICES says
    otherwise), checked against what PyTorch sees."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not re.fullmatch(r"cuda:\d+", name):
        raise MeidBenchError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N (N a GPU number, e.g. cuda:1)")
    if not torch.cuda.is_available():
        raise MeidBenchError(f"--device {name}: no CUDA GPU is visible to PyTorch here; use --device cpu or auto")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise MeidBenchError(f"--device {name}: PyTorch sees {count} GPU(s) here (cuda:0 to cuda:{count - 1}); "
                             "choose one of them")
    return device
