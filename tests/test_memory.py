"""Memory decisions: `--resident auto` counts what will be resident against the memory the run may count on, less
a reserve; a sweep running k runs side by side on one GPU gives each 1/k of it. The GPU's memory is faked here
(torch.cuda.mem_get_info, the device count)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import meid_bench.train.loop as loop
import meid_bench.train.sweep as sweep_module
from meid_bench.build.split_io import load_split
from meid_bench.cli import main
from meid_bench.data import residency
from meid_bench.data.residency import resident_fits, resident_nbytes
from meid_bench.train.loop import TrainOptions, Trainer
from meid_bench.train.sweep import SweepRun, memory_share, run_sweep, sweep_devices
from test_distributed import ddp_split  # noqa: F401  (the fixture)

GiB = 1 << 30
CUDA = torch.device("cuda")


@pytest.fixture
def one_80gb_gpu(monkeypatch):
    """A machine whose PyTorch sees one GPU of 80 GiB, all free, and some CUDA context calls faked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * GiB, 80 * GiB))


def test_a_reserve_is_kept_beside_the_models_share():
    assert resident_fits(50, 100, torch.device("cpu"), reserve=0) and not resident_fits(51, 100, torch.device("cpu"),
                                                                                        reserve=0)
    # VideoLT-shaped frames of 58 GiB on an empty 80 GiB GPU: 75% of 80 GiB would have taken them, with too little
    # left beside the model; 75% of what stays after the reserve does not.
    assert 58 * GiB <= 0.75 * 80 * GiB and not resident_fits(58 * GiB, 80 * GiB, CUDA)
    assert resident_fits(50 * GiB, 80 * GiB, CUDA)


def test_a_run_counts_on_its_share_of_the_gpu(one_80gb_gpu):
    assert residency.memory_for_run(CUDA) == 80 * GiB and residency.memory_for_run(CUDA, 0.5) == 40 * GiB
    assert residency.use_resident("auto", 35 * GiB, CUDA) and not residency.use_resident("auto", 35 * GiB, CUDA, 0.5)
    assert residency.use_resident("yes", 35 * GiB, CUDA, 0.5)  # asked for: always


@pytest.mark.parametrize("jobs, gpus, runs, share", [(1, 1, 5, 1.0), (2, 1, 5, 0.5), (3, 1, 5, 1 / 3),
                                                     (2, 2, 5, 1.0), (4, 2, 5, 0.5), (5, 2, 5, 1 / 3),
                                                     (4, 1, 1, 1.0)])
def test_the_share_follows_the_runs_per_gpu(jobs, gpus, runs, share):
    assert memory_share(jobs, gpus, runs) == pytest.approx(share)


def test_a_sweep_of_two_jobs_on_one_gpu_gives_each_run_half(one_80gb_gpu, monkeypatch, tmp_path):
    assert sweep_devices("cuda") == ["cuda"]
    commands: list[list[str]] = []

    def fake_call(command, **kwargs):
        commands.append(command)
        return 0

    monkeypatch.setattr(sweep_module.subprocess, "call", fake_call)
    runs = [SweepRun("late_avg", seed, tmp_path / f"run{seed}") for seed in range(3)]
    assert run_sweep(tmp_path / "split", runs, 2, [], devices=["cuda"]) == []
    assert len(commands) == 3 and commands[0][:3] == [sys.executable, "-m", "meid_bench"]
    assert all(c[c.index("--memory-share") + 1] == "0.5" for c in commands)

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert sweep_devices("cuda") == ["cuda:0", "cuda:1"]
    commands.clear()
    run_sweep(tmp_path / "split", runs, 2, [], devices=sweep_devices("cuda"))
    assert not any("--memory-share" in c for c in commands)  # one run per GPU: each has its GPU to itself


def test_the_trainer_decides_on_its_share_and_counts_frame_labels(ddp_split, monkeypatch, tmp_path):  # noqa: F811
    split = load_split(ddp_split)
    store = loop._open_store(split, None)
    needed = resident_nbytes(store, split, frame_labels=False)
    assert needed > 0
    assert resident_nbytes(store, split, True) == needed + store.total_frames * ((store.num_classes + 7) // 8)
    # Fake host memory: with all of it the frames fit, with half of it they do not.
    monkeypatch.setattr(residency, "free_memory", lambda device: GiB + 4 * needed)
    monkeypatch.setattr(residency, "total_memory", lambda device: 2 * GiB + 2 * needed)

    def resident(share: float, out: str) -> bool:
        options = TrainOptions(split=ddp_split, recipe="late_avg", out=tmp_path / out, epochs=1, device="cpu",
                               memory_share=share, overrides=("batch_size=16", "model.hidden=8"))
        return Trainer(options).resident

    assert resident(1.0, "whole") and not resident(0.5, "half")


@pytest.mark.parametrize("value", ["0", "1.5", "nan"])
def test_a_bad_memory_share_is_one_clear_line(ddp_split, tmp_path, value):  # noqa: F811
    result = CliRunner().invoke(main, ["train", "--split", str(ddp_split), "--device", "cpu", "--memory-share",
                                       value, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--memory-share" in result.output and "must be in (0, 1]" in result.output
    assert not Path(tmp_path / "r").exists()
