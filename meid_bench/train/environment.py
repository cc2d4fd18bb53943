"""What a run's numbers depend on besides its inputs: the software versions and the device, for run.json."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from meid_bench._version import __version__


def software_versions() -> dict:
    """Versions of Python, meid-bench and every library in the numeric path; ``cuda``/``cudnn`` are those torch
    was built with (null for a CPU build of torch)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"meid_bench": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn, "pandas": pd.__version__,
            "pyarrow": pa.__version__, "h5py": h5py.__version__}


def device_record(device: torch.device) -> dict:
    """The device a run trained on: ``type`` (cpu, cuda), ``index`` (GPU number or null) and ``name`` (the GPU's
    model, or the CPU's)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"type": "cuda", "index": index, "name": torch.cuda.get_device_name(index)}
    return {"type": device.type, "index": device.index, "name": cpu_name()}


def cpu_name() -> str:
    """The CPU model as the operating system names it (Linux: /proc/cpuinfo), else the machine architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def command_line() -> list[str]:
    """``sys.argv`` as given (for the CLI: the meid-bench executable and its arguments)."""
    return list(sys.argv)
