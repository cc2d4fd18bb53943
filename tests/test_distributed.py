"""Data-parallel training on the CPU (gloo, two processes under torchrun): every rank trains to the end of every
epoch, whatever the last batch holds; per-rank generators; what only rank 0 does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meid_bench.build.features.synth import SynthConfig, synthesize_features
from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split
from meid_bench.build.synthetic import write_synthetic_charades
from meid_bench.data import epoch_generator
from meid_bench.data.samplers import ClassBalancedSampler, InstanceSampler
from meid_bench.errors import MeidBenchError
from meid_bench.train.distributed import init_distributed, launched_rank

TINY = ("data.train_frames=4", "data.eval_frames=6", "optim.lr=3e-3", "model.hidden=8")


@pytest.fixture(scope="module")
def ddp_split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    annotations = write_synthetic_charades(root / "ann", num_classes=6, train_videos=120, test_videos=40, seed=3)
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=5.0, val_per_class=3), annotations,
                                root / "split")
    synthesize_features(load_split(split_dir), split_dir / "features.h5", SynthConfig(dim=16, fps=1.0))
    return split_dir


@pytest.mark.parametrize("draws, batch, world", [(41, 20, 2), (41, 20, 4), (6, 128, 7), (179_334 % 128, 128, 8),
                                                 (10, 4, 3), (3, 3, 3)])
def test_every_rank_gets_a_share_of_every_batch(draws, batch, world):
    labels = np.eye(3, dtype=bool)[np.arange(max(draws, 3)) % 3]
    for sampler in (InstanceSampler(labels, num_samples=draws, seed=1),
                    ClassBalancedSampler(labels, num_samples=draws, seed=1)):
        whole = sampler.index_batches(batch)
        shares = [sampler.index_batches(batch, rank, world) for rank in range(world)]
        assert all(len(s) == len(whole) for s in shares)  # the same number of steps on every rank
        for step, (videos, classes) in enumerate(whole):
            parts = [share[step] for share in shares]
            assert all(len(v) >= 1 and len(v) == len(c) for v, c in parts)
            taken = np.concatenate([v for v, _ in parts])
            if len(videos) >= world:  # the ranks together see exactly the single-process batch
                assert sorted(taken.tolist()) == sorted(videos.tolist())
            else:  # fewer draws than ranks: one draw each, every draw of the batch used
                assert [len(v) for v, _ in parts] == [1] * world
                assert set(taken.tolist()) == set(videos.tolist())


def test_frame_draws_differ_between_ranks_and_rank_0_keeps_the_single_process_stream():
    lengths = torch.full((5,), 1000, dtype=torch.int64)
    draws = [torch.rand(5, 8, generator=epoch_generator(3, 2, "cpu", rank)) for rank in range(3)]
    assert torch.equal(draws[0], torch.rand(5, 8, generator=epoch_generator(3, 2, "cpu")))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert lengths.sum() > 0


def test_a_numbered_gpu_under_torchrun_is_refused_with_a_remedy(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(MeidBenchError, match=r"--device cuda:1: under torchrun .*CUDA_VISIBLE_DEVICES"):
        init_distributed(torch.device("cuda", 1))
    assert launched_rank() == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launched_rank() == 0


def _torchrun(split: Path, out: Path, recipe: str, batch: int, *extra: str) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    # --standalone: a free port of its own, so that test runs side by side never meet.
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "meid_bench", "-q", "train",
               "--split", str(split), "--recipe", recipe, "--epochs", "2", "--device", "cpu", "--out", str(out),
               *[a for o in (*TINY, f"batch_size={batch}") for a in ("--set", o)], *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)


@pytest.mark.parametrize("recipe", ["meid", "late_avg"])
def test_two_ranks_train_to_the_end_when_the_last_batch_is_smaller_than_the_world(ddp_split, tmp_path, recipe):
    videos = len(load_split(ddp_split).train)
    batch = videos - 1  # two steps an epoch, the last one a single draw for two ranks
    assert videos % batch == 1
    process = _torchrun(ddp_split, tmp_path / recipe, recipe, batch, "--json")
    assert process.returncode == 0, process.stderr[-3000:]
    assert "loss is nan" not in process.stderr
    result = json.loads(process.stdout)  # one JSON object: only rank 0 reports the run
    assert Path(result["run"]) == tmp_path / recipe and 0.0 <= result["test"]["mAP"] <= 1.0
    log = [json.loads(line) for line in (tmp_path / recipe / "log.jsonl").read_text().splitlines()]
    assert [record["steps"] for record in log] == [2, 2]
    assert all(np.isfinite(value) for record in log for key, value in record.items() if key.startswith("loss_"))


_LAUNCHER = '''
import os, sys
from meid_bench.train.loop import Trainer

stop_after = int(os.environ.get("STOP_AFTER_EPOCH", "-1"))
if stop_after >= 0:  # an interruption of every rank after that epoch's checkpoint, like a cluster's time limit
    end_of_epoch = Trainer._epoch_done

    def stopping(self, epoch, record):
        end_of_epoch(self, epoch, record)
        self.dist.barrier()
        if epoch == stop_after:
            sys.exit(9)

    Trainer._epoch_done = stopping
from meid_bench.cli import main
main(prog_name="meid-bench")
'''


def test_two_ranks_resume_each_from_its_own_generators_to_the_bytes_of_a_straight_run(ddp_split, tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(_LAUNCHER)
    torchrun = Path(sys.executable).with_name("torchrun")
    videos = len(load_split(ddp_split).train)

    def run(out: str, *extra: str, stop_after: int = -1) -> subprocess.CompletedProcess:
        command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(launcher), "-q", "train",
                   "--split", str(ddp_split), "--recipe", "meid", "--epochs", "3", "--device", "cpu",
                   "--out", str(tmp_path / out), "--set", "model.dropout=0.3",
                   *[a for o in (*TINY, f"batch_size={videos - 1}") for a in ("--set", o)], *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1", STOP_AFTER_EPOCH=str(stop_after))
        return subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)

    straight = run("straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = run("resumed", stop_after=1)
    assert stopped.returncode != 0 and not (tmp_path / "resumed" / "metrics.json").exists()
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and len(saved["rng_per_rank"]) == 2
    # Each rank kept its own generators (the loop seeds rank r with seed + r).
    assert not torch.equal(saved["rng_per_rank"][0]["torch"], saved["rng_per_rank"][1]["torch"])
    resumed = run("resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = tmp_path / "straight", tmp_path / "resumed"
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
    final = [torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (a, b)]
    assert all(torch.equal(final[0]["model"][k], final[1]["model"][k]) for k in final[0]["model"])
    for rank in (0, 1):
        assert torch.equal(final[0]["rng_per_rank"][rank]["torch"], final[1]["rng_per_rank"][rank]["torch"])
