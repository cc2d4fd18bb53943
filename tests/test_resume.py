"""`train --resume` restores every random generator a run draws from, so an interrupted run ends with the bytes of
an uninterrupted one: on the CPU here, on a GPU under `pytest -m cuda`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import meid_bench.train.batches as batches_module
from meid_bench.build.features.synth import SynthConfig, synthesize_features
from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split
from meid_bench.build.synthetic import write_synthetic_charades
from meid_bench.train.checkpoint import load_checkpoint
from meid_bench.train.loop import TrainOptions, Trainer, train

TINY = ("batch_size=16", "data.train_frames=4", "data.eval_frames=6", "optim.lr=3e-3", "model.dropout=0.1",
        "model.hidden=8")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module")
def resume_split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    annotations = write_synthetic_charades(root / "ann", num_classes=6, train_videos=120, test_videos=40, seed=3)
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=5.0, val_per_class=3), annotations,
                                root / "split")
    synthesize_features(load_split(split_dir), split_dir / "features.h5", SynthConfig(dim=16, fps=1.0))
    return split_dir


_PROGRESS, _EPOCH_GENERATOR = Trainer._progress, batches_module.epoch_generator


class Recorder:
    """The generator states a run holds at the start of each epoch, and the frame-draw generators it makes."""

    def __init__(self, monkeypatch) -> None:
        self.epoch_start: dict[int, dict] = {}
        self.frame_generators: dict[int, list[torch.Tensor]] = {}
        self.restored: dict | None = None
        progress, make_generator = _PROGRESS, _EPOCH_GENERATOR  # the originals: one recorder at a time

        def recording_progress(trainer, batches, epoch):
            self.epoch_start[epoch] = _copy(trainer._rng_state())
            return progress(trainer, batches, epoch)

        def recording_generator(seed, epoch, device, rank=0):
            generator = make_generator(seed, epoch, device, rank)
            self.frame_generators.setdefault(epoch, []).append(generator.get_state().clone())
            return generator

        monkeypatch.setattr(Trainer, "_progress", recording_progress)
        monkeypatch.setattr(batches_module, "epoch_generator", recording_generator)


def _copy(state: dict) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else json.loads(json.dumps(v)) for k, v in state.items()}


def _same(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


@pytest.fixture
def deterministic(monkeypatch):
    """CUDA's index_add and index_put accumulate with atomics unless asked not to: without this two uninterrupted
    runs differ in the last bits already. (cuBLAS wants a fixed workspace for the same reason.)"""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", ["meid", "mixup"])
def test_resume_restores_every_generator_and_reproduces_the_bytes(resume_split, tmp_path, monkeypatch, recipe,
                                                                  device, request):
    if device == "cuda":
        request.getfixturevalue("deterministic")
    def options(out: str, resume: bool = False) -> TrainOptions:
        return TrainOptions(split=resume_split, recipe=recipe, out=tmp_path / out, epochs=3, device=device,
                            resume=resume, overrides=TINY)

    # Training never draws from numpy's or Python's global generators (a checkpoint would have to keep them).
    np.random.seed(5)
    random.seed(5)
    numpy_before, python_before = np.random.get_state()[1].copy(), random.getstate()
    straight_states = Recorder(monkeypatch)
    straight = train(options("straight"), echo=lambda _: None)
    assert np.array_equal(np.random.get_state()[1], numpy_before) and random.getstate() == python_before

    interrupted_states = Recorder(monkeypatch)
    end_of_epoch = Trainer._end_of_epoch

    def stop_after_second_epoch(self, epoch, record):
        end_of_epoch(self, epoch, record)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_end_of_epoch", stop_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(options("resumed"), echo=lambda _: None)
    monkeypatch.setattr(Trainer, "_end_of_epoch", end_of_epoch)
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert saved["epoch"] == 1 and len(saved["rng_per_rank"]) == 1
    # What was saved is what the uninterrupted run went on from at the start of epoch 2 ...
    assert _same(saved["rng_per_rank"][0], straight_states.epoch_start[2])
    assert ("cuda" in saved["rng_per_rank"][0]) is (device == "cuda")
    assert ("mix" in saved["rng_per_rank"][0]) is (recipe == "mixup")

    # ... and what the resumed run holds once restored.
    resumed_states = Recorder(monkeypatch)
    trainer = Trainer(options("resumed", resume=True))
    assert trainer.start_epoch == 2
    assert _same(_copy(trainer._rng_state()), straight_states.epoch_start[2])
    resumed = trainer.fit()
    assert sorted(resumed_states.epoch_start) == [2]
    assert _same(resumed_states.epoch_start[2], straight_states.epoch_start[2])
    # The frame-draw generators are made afresh from (seed, epoch, rank): epoch 2's are epoch 2's.
    assert all(torch.equal(a, b) for a, b in zip(resumed_states.frame_generators[2],
                                                 straight_states.frame_generators[2], strict=True))
    assert interrupted_states.frame_generators[1] and all(
        torch.equal(a, b) for a, b in zip(interrupted_states.frame_generators[1], straight_states.frame_generators[1],
                                          strict=True))

    for name in ("metrics.json", "metrics_val.json"):
        assert (resumed / name).read_text() == (straight / name).read_text()
    final = [torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (straight, resumed)]
    assert all(torch.equal(final[0]["model"][k], final[1]["model"][k]) for k in final[0]["model"])
    assert _same(final[0]["rng_per_rank"][0], final[1]["rng_per_rank"][0])
    assert (resumed / "predictions" / "test.parquet").read_bytes() == (straight / "predictions" /
                                                                         "test.parquet").read_bytes()


def test_a_checkpoint_of_more_processes_is_refused_with_the_launch_to_use(resume_split, tmp_path):
    options = TrainOptions(split=resume_split, recipe="late_avg", out=tmp_path / "run", epochs=2, device="cpu",
                           overrides=TINY)
    run = train(TrainOptions(**{**options.__dict__, "epochs": 1}), echo=lambda _: None)
    last = run / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    payload["rng_per_rank"] = payload["rng_per_rank"] * 2
    payload.pop("format"), payload.pop("version")
    from meid_bench.train.checkpoint import save_checkpoint
    save_checkpoint(last, payload)
    from meid_bench.errors import MeidBenchError
    with pytest.raises(MeidBenchError, match=r"trained by 2 process\(es\), this is 1; resume it with torchrun "
                                             r"--nproc_per_node 2"):
        Trainer(TrainOptions(**{**options.__dict__, "epochs": 1, "resume": True}))
