"""What only a GPU shows: pinned copies while the GPU is busy, float32 predictions from an autocast run, NCCL
training on two GPUs, the feature extractor in float16. Marked ``cuda``: skipped where PyTorch sees no GPU, run
alone with ``python -m pytest -m cuda`` (training and ``--resume`` on CUDA: tests/test_resume.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from meid_bench import load_run
from meid_bench.build.features import FeatureStore
from meid_bench.build.split_io import load_split
from meid_bench.data import BatchGatherer, load_frames
from meid_bench.extract.run import extract_features
from meid_bench.train.loop import TrainOptions, train
from test_data_path import DIM, split_dir  # noqa: F401  (the fixture)
from test_distributed import TINY as DDP_TINY, ddp_split  # noqa: F401  (the fixture)
from test_extract import media, options as extract_options  # noqa: F401  (the fixture)

pytestmark = pytest.mark.cuda


def _busy(device: torch.device) -> torch.Tensor:
    """Queue a few hundred milliseconds of matrix products on ``device``'s current stream, without waiting."""
    x = torch.randn(4096, 4096, device=device)
    for _ in range(40):
        x = torch.tanh(x @ x) * 0.01
    return x


def _targets() -> list[torch.device]:
    """The current GPU, and where there is a second one, a GPU that is not the current device (cuda:1 from a
    process whose current device is cuda:0: the copy runs on cuda:1's stream)."""
    return [torch.device("cuda", i) for i in range(min(2, torch.cuda.device_count()))]


@pytest.mark.parametrize("target", _targets() if torch.cuda.is_available() else [], ids=str)
def test_pinned_copies_are_intact_while_the_gpu_is_busy(split_dir, target):  # noqa: F811
    store = FeatureStore(split_dir / "features.h5")
    positions = np.arange(store.num_videos)
    expected = load_frames(store, positions, torch.device("cpu"))
    torch.cuda.set_device(0)
    _busy(target)  # the copies queue behind this work: a buffer refilled before its copy ran corrupts frames
    loaded = load_frames(store, positions, target, chunk_bytes=7 * DIM * 2)  # many chunks through two buffers
    assert loaded.device == target and torch.equal(loaded.cpu(), expected)

    rows = [np.random.default_rng(i).integers(0, store.total_frames, (16, 5)) for i in range(12)]
    cpu = [batch.clone() for batch in BatchGatherer(store, "cpu", threads=0).gather(rows)]
    _busy(target)
    gathered = [batch.cpu() for batch in BatchGatherer(store, target, threads=2).gather(rows)]
    assert all(torch.equal(a, b) for a, b in zip(gathered, cpu, strict=True))


def test_an_autocast_run_predicts_in_float32(ddp_split, tmp_path):  # noqa: F811
    run = train(TrainOptions(split=ddp_split, recipe="attention", out=tmp_path / "run", epochs=1, device="cuda",
                             overrides=DDP_TINY + ("batch_size=16",)), echo=lambda _: None)
    schema = pq.read_schema(run / "predictions" / "test.parquet")
    assert {str(schema.field(name).type) for name in schema.names if name != "video_id"} == {"float"}
    # The stored scores are those of the float32 model (training ran under bfloat16 autocast, prediction did not).
    loaded = load_run(run)
    from meid_bench.data import GpuResidentFeatures, VideoFeatureDataset

    split = load_split(ddp_split)
    dataset = VideoFeatureDataset(split, ddp_split / "features.h5", "test", loaded.recipe.data.eval_frames, False)
    batch = GpuResidentFeatures(dataset, "cuda").batch(np.arange(len(dataset)))
    model = loaded.model.to("cuda").eval()
    with torch.no_grad():
        logits = model(batch["features"]).logits
    assert logits.dtype == torch.float32
    table = pq.read_table(run / "predictions" / "test.parquet").to_pandas().set_index("video_id")
    stored = table.loc[dataset.video_ids].to_numpy()
    np.testing.assert_allclose(stored, logits.cpu().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_train_with_nccl_when_the_last_batch_is_smaller_than_the_world(ddp_split, tmp_path):  # noqa: F811
    videos = len(load_split(ddp_split).train)
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "meid_bench", "-q", "train",
               "--split", str(ddp_split), "--recipe", "meid", "--epochs", "2", "--device", "cuda",
               "--out", str(tmp_path / "nccl"), *[a for o in (*DDP_TINY, f"batch_size={videos - 1}")
                                                 for a in ("--set", o)], "--json"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout)
    info = json.loads((tmp_path / "nccl" / "run.json").read_text())
    assert info["world_size"] == 2 and info["device"]["type"] == "cuda" and 0.0 <= result["test"]["mAP"] <= 1.0
    checkpoint = torch.load(tmp_path / "nccl" / "checkpoints" / "last.pt", weights_only=True)
    assert len(checkpoint["rng_per_rank"]) == 2 and all("cuda" in r for r in checkpoint["rng_per_rank"])


def test_the_feature_extractor_runs_in_float16_and_records_the_gpu(media, tmp_path):  # noqa: F811
    cpu = FeatureStore(extract_features(extract_options(media, tmp_path / "cpu.h5", device="cpu")).path)
    gpu = FeatureStore(extract_features(extract_options(media, tmp_path / "gpu.h5", device="cuda")).path)
    attrs = gpu.attrs
    assert attrs["precision"] == "float16" and attrs["device"] == "cuda"
    assert attrs["device_name"] == torch.cuda.get_device_name(torch.cuda.current_device())
    versions = json.loads(attrs["versions"])
    assert versions["cuda"] == str(torch.version.cuda) and versions["cudnn"] == str(torch.backends.cudnn.version())
    assert gpu.video_ids == cpu.video_ids and np.array_equal(gpu.offsets, cpu.offsets)
    for video in cpu.video_ids:
        a, b = cpu.read(video).astype(np.float32), gpu.read(video).astype(np.float32)
        assert np.isfinite(b).all()
        # float16 weights and activations against float32: close, not equal
        np.testing.assert_allclose(b, a, rtol=0.05, atol=0.05 * float(np.abs(a).max()))
