"""`meid-bench train`: every recipe runs, resume reproduces, distributed runs, bad input is a clear error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from click.testing import CliRunner

from meid_bench.build.features.synth import SynthConfig, synthesize_features
from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split
from meid_bench.build.synthetic import write_synthetic_charades
from meid_bench.cli import main
from meid_bench.data.samplers import ClassBalancedSampler, InstanceSampler
from meid_bench.train.config import list_recipes, load_recipe
from meid_bench.train.loop import TrainOptions, Trainer, train

TINY = ("batch_size=16", "data.train_frames=4", "data.eval_frames=6", "optim.lr=3e-3", "model.dropout=0.1")


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    annotations = write_synthetic_charades(root / "ann", num_classes=6, train_videos=120, test_videos=40, seed=3)
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=5.0, val_per_class=3), annotations,
                                root / "split")
    synthesize_features(load_split(split_dir), split_dir / "features.h5", SynthConfig(dim=16, fps=1.0))
    return split_dir


def tiny_options(split: Path, out: Path, recipe: str = "late_avg", epochs: int = 1, overrides_extra: tuple = (),
                 **extra) -> TrainOptions:
    overrides = TINY + ("model.hidden_ratio=1.0", "model.hidden=8") + tuple(overrides_extra)
    return TrainOptions(split=split, recipe=recipe, out=out, epochs=epochs, device="cpu",
                        overrides=overrides, **extra)


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_trains_one_epoch(tiny_split, tmp_path, recipe):
    init = load_recipe(recipe).init
    if init.from_run is not None:  # a second stage: its first stage first, where the recipe looks for it
        first = init.source_for(tmp_path / recipe, "charadeslt", 0)
        first_recipe = first.name.removeprefix("charadeslt-").removesuffix("-seed0")
        train(tiny_options(tiny_split, first, first_recipe), echo=lambda _: None)
    run = train(tiny_options(tiny_split, tmp_path / recipe, recipe), echo=lambda _: None)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["subset"] == "test"
    info = json.loads((run / "run.json").read_text())
    assert info["format"] == "meid-bench-run" and info["method"] == recipe
    assert info["split"]["checksum"] == load_split(tiny_split).checksum
    assert (run / "predictions" / "test.parquet").is_file() and (run / "checkpoints" / "best.pt").is_file()


def test_meid_trains_expert2_on_class_balanced_batches(tiny_split, tmp_path):
    trainer = Trainer(tiny_options(tiny_split, tmp_path / "m", "meid"))
    assert set(trainer.streams) == {"instance", "balanced"}
    assert isinstance(trainer.streams["instance"].sampler, InstanceSampler)
    assert isinstance(trainer.streams["balanced"].sampler, ClassBalancedSampler)
    late = Trainer(tiny_options(tiny_split, tmp_path / "l", "late_avg"))
    assert set(late.streams) == {"instance"}


def test_same_seed_same_result_and_best_chosen_on_validation(tiny_split, tmp_path):
    a = train(tiny_options(tiny_split, tmp_path / "a", "meid", epochs=3, progress=True), echo=lambda _: None)
    b = train(tiny_options(tiny_split, tmp_path / "b", "meid", epochs=3), echo=lambda _: None)
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
    log = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    best = max(range(len(log)), key=lambda i: (log[i]["val_mAP"], -i))
    assert json.loads((a / "metrics.json").read_text())["best_epoch"] == log[best]["epoch"]


def straight_and_resumed(tiny_split: Path, tmp_path: Path, monkeypatch, recipe: str) -> tuple[Path, Path]:
    """A 3-epoch run straight through, and the same run stopped after its second epoch and resumed."""
    straight = train(tiny_options(tiny_split, tmp_path / "straight", recipe, epochs=3), echo=lambda _: None)
    original = Trainer._end_of_epoch

    def crash_after_second_epoch(self, epoch, record):
        original(self, epoch, record)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_end_of_epoch", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_options(tiny_split, tmp_path / "resumed", recipe, epochs=3), echo=lambda _: None)
    monkeypatch.setattr(Trainer, "_end_of_epoch", original)
    resumed = train(tiny_options(tiny_split, tmp_path / "resumed", recipe, epochs=3, resume=True),
                    echo=lambda _: None)
    return straight, resumed


@pytest.mark.determinism
def test_resume_reproduces_an_uninterrupted_run(tiny_split, tmp_path, monkeypatch):
    straight, resumed = straight_and_resumed(tiny_split, tmp_path, monkeypatch, "meid")
    assert (resumed / "metrics.json").read_text() == (straight / "metrics.json").read_text()
    weights = [torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"] for run in (straight, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    strip = lambda run: [{k: v for k, v in json.loads(line).items() if k != "train_seconds"}  # noqa: E731
                         for line in (run / "log.jsonl").read_text().splitlines()]
    assert strip(resumed) == strip(straight)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and fragment in result.output, result.output


def test_bad_inputs(tiny_split, tmp_path):
    base = ["train", "--split", tiny_split, "--epochs", "1", "--set", "batch_size=16"]
    if not torch.cuda.is_available():
        assert_clean_error(invoke(*base, "--device", "cuda", "--out", tmp_path / "c"), "no CUDA GPU")
    assert_clean_error(invoke(*base, "--set", "optim.learning_rate=1", "--out", tmp_path / "k"),
                       "learning_rate: unknown key")
    assert_clean_error(invoke(*base, "--set", "epochs=many", "--out", tmp_path / "t"), "epochs")
    assert_clean_error(invoke(*base, "--recipe", "no_such_recipe", "--out", tmp_path / "r"), "no_such_recipe")
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text("model: {name: late_avg}\nepochz: 3\n")
    assert_clean_error(invoke(*base, "--recipe", bad_recipe, "--out", tmp_path / "b"), "epochz: unknown key")
    assert_clean_error(invoke(*base, "--features", tmp_path / "none.h5", "--out", tmp_path / "f"),
                       "no feature store")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("not a run")
    assert_clean_error(invoke(*base, "--resume", "--out", tmp_path / "thesis"), "nothing to resume")


def test_existing_run_folder_needs_resume_and_checkpoints_are_checked(tiny_split, tmp_path):
    run = train(tiny_options(tiny_split, tmp_path / "run"), echo=lambda _: None)
    before = (run / "metrics.json").read_text()
    args = ["train", "--split", tiny_split, "--epochs", "1", "--set", "batch_size=16", "--out", run]
    assert_clean_error(invoke(*args, "--recipe", "late_avg"), "already exists; pass --resume")
    assert (run / "metrics.json").read_text() == before  # nothing lost
    assert_clean_error(invoke(*args, "--recipe", "meid", "--resume"), "checkpoint of model 'late_avg'")
    (run / "checkpoints" / "last.pt").write_bytes(b"\x80\x02garbage")
    assert_clean_error(invoke(*args, "--recipe", "late_avg", "--resume"), "not a readable meid-bench checkpoint")


def test_store_of_another_split_is_refused(tiny_split, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_split, other)
    store = other / "features.h5"
    with h5py.File(store, "r+") as handle:  # a store that says it was made for another split
        handle.attrs["split_checksum"] = "0" * 64
    result = invoke("train", "--split", other, "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "made for the split with checksum 000000000000" in result.output


def test_a_split_rebuilt_by_other_software_keeps_its_checksum_and_its_stores(tiny_split, tmp_path):
    # The same tables with another recorded software version (as a rebuild by another meid-bench writes them):
    # the same split checksum, so its store and runs still apply.
    other = tmp_path / "other"
    shutil.copytree(tiny_split, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["software"]["meid_bench"] = "9.9.9"
    manifest["parameters"]["seed"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    before, after = load_split(tiny_split), load_split(other)
    assert after.checksum == before.checksum and after.manifest_sha256 != before.manifest_sha256
    result = invoke("train", "--split", other, "--epochs", "1", "--set", "batch_size=16", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    # A store or run that recorded the manifest's sha256 (meid-bench 0.2 and earlier) is still this split's.
    assert before.matches(before.manifest_sha256) and before.matches(before.checksum) and not before.matches("")
    assert not before.matches(after.manifest_sha256)
    with h5py.File(other / "features.h5", "r+") as handle:  # a store written by meid-bench 0.2 for this build
        handle.attrs["split_checksum"] = after.manifest_sha256
    legacy = invoke("train", "--split", other, "--epochs", "1", "--set", "batch_size=16", "--out", tmp_path / "old")
    assert legacy.exit_code == 0, legacy.output


def test_two_process_data_parallel_run(tiny_split, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "meid_bench", "train",
               "--split", str(tiny_split), "--recipe", "meid", "--epochs", "2", "--device", "cpu",
               "--out", str(tmp_path / "ddp"), *[a for o in TINY for a in ("--set", o)]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert process.returncode == 0, process.stderr[-2000:]
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["world_size"] == 2
    assert len((tmp_path / "ddp" / "log.jsonl").read_text().splitlines()) == 2  # only rank 0 wrote
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["num_videos"] > 0


def test_sweep_runs_each_recipe_and_seed_once(tiny_split, tmp_path):
    args = ["sweep", "--split", tiny_split, "--recipes", "late_avg,attention", "--seeds", "0,1", "--jobs", "2",
            "--runs-root", tmp_path / "runs", "--device", "cpu", "--epochs", "1",
            *[a for o in TINY for a in ("--set", o)]]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    done = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/metrics.json"))
    name = load_split(tiny_split).name
    assert done == [f"{name}-{r}-seed{s}" for r in ("attention", "late_avg") for s in (0, 1)]
    again = invoke(*args)
    assert again.exit_code == 0 and "4 already done, 0 to run" in again.output
    assert_clean_error(invoke("sweep", "--split", tiny_split, "--recipes", "nope", "--runs-root", tmp_path / "x"),
                       "unknown recipe")


def test_a_schedule_too_short_for_the_split_is_flagged(tiny_split, tmp_path):
    def notes(out: str, lr: str) -> list[str]:
        lines: list[str] = []
        options = TrainOptions(split=tiny_split, recipe="late_avg", out=tmp_path / out, epochs=2, device="cpu",
                               overrides=TINY + ("model.hidden=8", f"optim.lr={lr}"))
        train(options, echo=lines.append)
        return [line for line in lines if line.startswith("this schedule makes")]

    slow = notes("slow", "1e-4")
    assert len(slow) == 1  # about 15 steps at 1e-4: the model would barely move
    # The split's benchmark has a schedule in the recipe (run.json: schedule_from): the note says what shortened it.
    assert "`schedules: charadeslt:` was applied, then changed by --epochs or --set" in slow[0]
    assert "has no schedule" not in slow[0]
    assert notes("fast", "5e-2") == []


def test_set_schedule_names_epochs(tiny_split, tmp_path):
    base = ["train", "--split", tiny_split, "--recipe", "late_avg", "--device", "cpu", "--out", tmp_path / "r"]
    for key in ("schedule.epochs=3", "schedules.charadeslt.epochs=3"):
        result = invoke(*base, "--set", key)
        assert_clean_error(result, "shorten a run with --epochs N")
        assert "already applied" in result.output and result.output.count("\n") == 1
    assert_clean_error(invoke(*base, "--set", "optimizer.lr=1"), "optimizer: not a section of the recipe (its "
                                                                   "sections: balanced_sampler")


@pytest.mark.parametrize("workers", [0, 2])
def test_store_backed_loading_path(tiny_split, tmp_path, workers):
    # Features read from the store per batch (DataLoader, label masks from the sampled classes), as for splits too
    # large to hold on the device; the same seed and worker count give the same run.
    def run(out: str) -> str:
        options = tiny_options(tiny_split, tmp_path / out, "meid", epochs=2, resident="no", workers=workers)
        return (train(options, echo=lambda _: None) / "metrics.json").read_text()

    first = run("a")
    assert json.loads(first)["num_videos"] > 0
    assert run("b") == first


@pytest.mark.parametrize("sampling, random_draws", [("random", True), ("uniform", False)])
def test_train_frame_sampling_reaches_the_streams(tiny_split, tmp_path, sampling, random_draws):
    options = tiny_options(tiny_split, tmp_path / sampling, "late_avg")
    options = TrainOptions(**{**options.__dict__,
                              "overrides": options.overrides + (f"data.train_frame_sampling={sampling}",)})
    stream = Trainer(options).streams["instance"]
    assert stream.dataset.train is random_draws and stream.dataset.num_frames == 4


def test_run_json_records_the_benchmark_schedule_and_meid_logs_its_distillation(tiny_split, tmp_path):
    # meid_kl_distill: MEID with its distillation on (the meid recipe has it off).
    run = train(TrainOptions(split=tiny_split, recipe="meid_kl_distill", out=tmp_path / "m", epochs=2, device="cpu",
                             overrides=TINY + ("model.hidden=8",)), echo=lambda _: None)
    recipe = json.loads((run / "run.json").read_text())["recipe"]
    # The charadeslt schedule was applied, then the overrides (--epochs, optim.lr) on top of it.
    assert recipe["schedule_from"] == "charadeslt" and recipe["schedules"] == {}
    assert recipe["epochs"] == 2 and recipe["optim"]["lr"] == 3e-3
    assert recipe["optim"]["milestones"] == list(load_recipe("meid").schedules["charadeslt"].milestones)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    weight = recipe["model"]["distill_weight"]
    for record in log:  # the weighted loss and the raw distance, every epoch
        assert record["loss_distill"] == pytest.approx(weight * record["distill_distance"], rel=1e-4)
        assert record["distill_distance"] > 0


def test_frame_labels_reach_meid_only_and_only_from_stores_that_have_them(tiny_split, tmp_path):
    labelled = tmp_path / "labelled.h5"
    synthesize_features(load_split(tiny_split), labelled, SynthConfig(dim=16, fps=1.0), frame_labels=True)
    # The label-routed MMD uses labels; MEID's default (kl) distillation compares predictions and needs none.
    mmd = Trainer(TrainOptions(**{**tiny_options(tiny_split, tmp_path / "m", "meid_mmd_distill").__dict__,
                                  "features": labelled}))
    batch = next(iter(mmd.streams["balanced"].epoch(0)))
    assert batch["frame_labels"].shape[:2] == batch["features"].shape[:2]
    kl = Trainer(TrainOptions(**{**tiny_options(tiny_split, tmp_path / "k", "meid").__dict__, "features": labelled}))
    assert "frame_labels" not in next(iter(kl.streams["balanced"].epoch(0)))
    late = Trainer(TrainOptions(**{**tiny_options(tiny_split, tmp_path / "l").__dict__, "features": labelled}))
    assert "frame_labels" not in next(iter(late.streams["instance"].epoch(0)))
    plain = Trainer(tiny_options(tiny_split, tmp_path / "p", "meid_mmd_distill"))
    assert "frame_labels" not in next(iter(plain.streams["instance"].epoch(0)))


def test_predictions_are_float32(tiny_split, tmp_path):
    import pyarrow.parquet as pq

    run = train(tiny_options(tiny_split, tmp_path / "r", "attention"), echo=lambda _: None)
    schema = pq.read_schema(run / "predictions" / "test.parquet")
    assert {str(schema.field(name).type) for name in schema.names if name != "video_id"} == {"float"}


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]


def test_crt_retrains_only_the_classifier_from_the_first_stage_of_the_same_seed(tiny_split, tmp_path):
    first = train(tiny_options(tiny_split, tmp_path / "charadeslt-late_avg-seed1", seed=1, epochs=2),
                  echo=lambda _: None)
    second = train(tiny_options(tiny_split, tmp_path / "crt", "crt", seed=1, epochs=2), echo=lambda _: None)
    before, after = _state(first), _state(second)
    assert set(before) == set(after)
    for name in before:  # the embedding exactly as the first stage left it; the classifier learnt again
        if name.startswith("classifier."):
            assert not torch.equal(before[name], after[name]), name
        else:
            assert torch.equal(before[name], after[name]), name
    info = json.loads((second / "run.json").read_text())
    assert info["init"]["run"] == str(first.resolve()) and info["init"]["checkpoint"] == "best"
    assert len(info["init"]["sha256"]) == 64 and info["recipe"]["init"]["train"] == ["classifier"]
    assert "init" not in json.loads((first / "run.json").read_text())["recipe"]  # first stages record none
    # Deterministic: the same second stage again gives the same bytes.
    again = train(tiny_options(tiny_split, tmp_path / "crt-again", "crt", seed=1, epochs=2,
                               overrides_extra=(f"init.from_run={first}",)), echo=lambda _: None)
    assert (again / "metrics.json").read_text() == (second / "metrics.json").read_text()


def test_a_second_stage_refuses_a_missing_or_different_first_stage(tiny_split, tmp_path):
    runner = CliRunner()
    base = ["train", "--split", str(tiny_split), "--device", "cpu", "--epochs", "1", *sum((["--set", o] for o in TINY),
                                                                                          [])]
    missing = runner.invoke(main, [*base, "--recipe", "crt", "--out", str(tmp_path / "crt")])
    assert missing.exit_code == 2 and "no finished run there" in missing.output and "Traceback" not in missing.output
    assert not (tmp_path / "crt" / "run.json").exists()
    first = tmp_path / "charadeslt-late_avg-seed0"
    assert runner.invoke(main, [*base, "--recipe", "late_avg", "--out", str(first), "--set", "model.hidden=8"]
                         ).exit_code == 0
    wider = runner.invoke(main, [*base, "--recipe", "crt", "--out", str(tmp_path / "crt2"), "--set", "model.hidden=12"])
    assert wider.exit_code == 2 and "model hidden: 8" in wider.output.replace("has ", "") and "Traceback" not in \
        wider.output
    unknown = runner.invoke(main, [*base, "--recipe", "crt", "--out", str(tmp_path / "crt3"), "--set", "model.hidden=8",
                                   "--set", "init.train=[head]"])
    assert unknown.exit_code == 2 and "init.train: head: not a module" in unknown.output


@pytest.mark.determinism
def test_a_resumed_second_stage_reproduces_an_uninterrupted_one(tiny_split, tmp_path, monkeypatch):
    train(tiny_options(tiny_split, tmp_path / "charadeslt-late_avg-seed0", epochs=2), echo=lambda _: None)
    straight, resumed = straight_and_resumed(tiny_split, tmp_path, monkeypatch, "crt")
    assert (resumed / "metrics.json").read_text() == (straight / "metrics.json").read_text()
