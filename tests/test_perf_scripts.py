"""The perf scripts run end to end on tiny inputs (the GPU one on the CPU), so that a lent GPU's few minutes are
spent measuring, not debugging."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from pathlib import Path

PERF = Path(__file__).resolve().parents[1] / "perf"


def _script(name: str):
    sys.path.insert(0, str(PERF))
    spec = importlib.util.spec_from_file_location(f"perf_{name}", PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_videolt_script_runs_on_the_cpu(tmp_path, capsys):
    _script("gpu_videolt").main(["--device", "cpu", "--videos", "40", "--dim", "16", "--epochs", "2",
                                 "--workers", "0", "1", "--set", "batch_size=16", "--set", "data.train_frames=4",
                                 "--set", "data.eval_frames=4", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "0 workers" in out and "1 workers" in out
    summary = out[out.index("summary"):].splitlines()
    assert "VideoLT 100 ep" in summary[1] and "device CPU" in out
    for recipe in ("meid", "late_avg"):
        rows = [line for line in summary if line.startswith(recipe)]
        assert [row.split()[1] for row in rows] == ["resident", "streamed"] and "time" in rows[1]
        for row in rows:  # the measured rate and the 100-epoch VideoLT time it implies
            rate, hours = float(row.split()[4].replace(",", "")), float(row.split()[5])
            # hours are printed to 0.1 h, the rate to a whole video per second
            assert row.split()[6] == "h" and hours == pytest.approx(100 * 179_334 / rate / 3600, rel=0.01, abs=0.051)
    assert list(tmp_path.iterdir()) == []  # the generated data is deleted


def test_gpu_videolt_names_the_gpu_to_nvidia_smi_by_uuid(monkeypatch):
    module = _script("gpu_videolt")
    assert module.videolt_hours(179_334 * 100 / 3600) == pytest.approx(1.0)

    class Properties:
        def __init__(self, index: int) -> None:
            self.uuid = f"5c1a-{index}"

    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: asked.append(index) or Properties(index))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    # torch's cuda:1 under CUDA_VISIBLE_DEVICES=2,5 is nvidia-smi's GPU 5: only the UUID names it for both.
    assert module.nvidia_smi_id(torch.device("cuda", 1)) == "GPU-5c1a-1"
    assert module.nvidia_smi_id(torch.device("cuda")) == "GPU-5c1a-3" and asked == [1, 3]


def test_loading_benchmark_runs_on_a_tiny_store(tmp_path, capsys, monkeypatch):
    script = _script("bench_feature_loading")
    monkeypatch.setattr(script, "VIDEOLT_DIM", 16)
    monkeypatch.setattr(sys, "argv", ["x", "--videos", "30", "--repeats", "1", "--workers", "0", "--dtypes",
                                      "float16", "--with-items", "--dir", str(tmp_path)])
    script.main()
    out = capsys.readouterr().out
    for state in ("warm", "cold"):
        assert state in out
    assert out.count("store batches") == 4 and out.count("store batches f16") == 2 and out.count("store items") == 2
    assert list(tmp_path.iterdir()) == []
