"""What scripts and notebooks rely on: --json (one JSON object on stdout, nothing else there), logging with -v/-q,
`meid-bench recipes`, the Python API (Evaluator, load_run, Split's repr), run.json's record of versions, device,
command line and feature checksum, --device cuda:N, and a sweep spread over several GPUs."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import meid_bench
from meid_bench.build.features.synth import SynthConfig, synthesize_features
from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split
from meid_bench.build.synthetic import write_synthetic_charades
from meid_bench.cli import main
from meid_bench.data import VideoFeatureDataset
from meid_bench.errors import MeidBenchError
from meid_bench.evaluator import read_predictions
from meid_bench.train import sweep as sweep_module
from meid_bench.train.config import apply_overrides, list_recipes, load_recipe
from meid_bench.train.batches import EvalStream
from meid_bench.devices import resolve_device
from meid_bench.train.loop import TrainOptions, predict, train

TINY = ("batch_size=16", "data.train_frames=4", "data.eval_frames=6", "optim.lr=3e-3", "model.dropout=0.1",
        "model.hidden=8")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny split with simulated features, and one finished MEID run on it."""
    root = tmp_path_factory.mktemp("scripting")
    annotations = write_synthetic_charades(root / "ann", num_classes=6, train_videos=120, test_videos=40, seed=5)
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=5.0, val_per_class=3), annotations,
                                root / "split")
    synthesize_features(load_split(split_dir), split_dir / "features.h5", SynthConfig(dim=16, fps=1.0))
    train(TrainOptions(split=split_dir, recipe="meid", out=root / "run", epochs=2, device="cpu", overrides=TINY))
    return root


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def only_json(result) -> dict:
    """stdout must be exactly one JSON object."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_on_build_verify_evaluate_and_train(project, tmp_path):
    built = only_json(invoke("build", "charadeslt", "--annotations", project / "ann", "--imbalance", "5",
                             "--val-per-class", "3", "--out", tmp_path / "split", "--json"))
    split = load_split(tmp_path / "split")
    assert built["split"]["checksum"] == split.checksum and built["split"]["videos"]["test"] == len(split.test)
    assert sum(built["split"]["groups"].values()) == split.num_classes
    assert built["reference"]["status"] in ("match", "differ", "not-applicable", "none")

    verified = only_json(invoke("verify", tmp_path / "split", "--json"))
    assert verified["checks"] == "ok" and verified["split"]["checksum"] == split.checksum

    evaluated = only_json(invoke("evaluate", "--run", project / "run", "--subset", "val", "--out",
                                 tmp_path / "eval", "--json"))
    assert evaluated["metrics"]["subset"] == "val" and len(evaluated["written"]) == 2
    assert evaluated["metrics"]["mAP"] == json.loads((project / "run" / "metrics_val.json").read_text())["mAP"]

    trained = invoke("train", "--split", project / "split", "--recipe", "late_avg", "--epochs", "2", "--device",
                     "cpu", "--out", tmp_path / "run", *[a for o in TINY for a in ("--set", o)], "--json")
    summary = only_json(trained)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["run"] == str(tmp_path / "run") and summary["test"]["mAP"] == metrics["mAP"]
    assert summary["best_epoch"] == metrics["best_epoch"] + 1 and summary["val"]["mAP"] is not None
    assert "epoch 2/2" in trained.stderr  # the progress went to stderr


def test_train_then_evaluate_and_one_epoch_number_everywhere(project, tmp_path):
    # `train ... && evaluate --run RUN`: evaluate re-scores the finished run in place, says so, and keeps every
    # field training wrote. The best epoch is one number, counted from 1, on the console, in --json, in the
    # report's results.csv and from load_run; files store its 0-based index (docs/formats.md).
    run = tmp_path / "run"
    trained = invoke("train", "--split", project / "split", "--recipe", "late_avg", "--epochs", "4", "--device",
                     "cpu", "--out", run, *[a for o in TINY for a in ("--set", o)], "--set", "optim.lr=3e-2", "--json")
    summary = only_json(trained)
    before = (run / "metrics.json").read_text()
    stored = json.loads(before)["best_epoch"]
    console = re.search(r"best epoch (\d+) \(val mAP", trained.stderr)
    assert console, trained.stderr
    shown = int(console.group(1))
    assert shown == summary["best_epoch"] == stored + 1 and 1 <= shown <= 4

    evaluated = invoke("evaluate", "--run", run)
    assert evaluated.exit_code == 0, evaluated.output
    assert f"re-scored the run {run}" in evaluated.stdout and "keeping best_epoch" in evaluated.stdout
    assert (run / "metrics.json").read_text() == before  # same predictions, same figures, every field kept
    assert invoke("evaluate", "--run", run, "--subset", "val").exit_code == 0
    assert json.loads((run / "metrics_val.json").read_text())["best_epoch"] == stored
    again = only_json(invoke("evaluate", "--run", run, "--json"))
    assert again["rescored"] and again["kept"] == ["best_epoch"]

    reported = invoke("report", run, "--out", tmp_path / "report")
    assert reported.exit_code == 0, reported.output
    with open(tmp_path / "report" / "results.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert int(row["best_epoch"]) == shown
    loaded = meid_bench.load_run(run)
    assert loaded.epoch == shown and f"best checkpoint of epoch {shown}," in repr(loaded)


def test_quiet_and_verbose(project, tmp_path):
    args = ["train", "--split", project / "split", "--recipe", "late_avg", "--epochs", "1", "--device", "cpu",
            *[a for o in TINY for a in ("--set", o)]]
    normal = invoke(*args, "--out", tmp_path / "a")
    quiet = invoke("-q", *args, "--out", tmp_path / "b")
    verbose = invoke("-v", *args, "--out", tmp_path / "c")
    assert all(r.exit_code == 0 for r in (normal, quiet, verbose)), (normal.output, quiet.output, verbose.output)
    assert "epoch 1/1" in normal.stderr and "best epoch" in normal.stderr
    assert "epoch 1/1" not in quiet.stderr and "best epoch" not in quiet.stderr
    assert "debug: meid_bench.build.features.audit: " in verbose.stderr and "epoch 1/1" in verbose.stderr
    assert all(r.stdout == f"run: {tmp_path / d}\n" for r, d in ((normal, "a"), (quiet, "b"), (verbose, "c")))


def test_library_logs_through_logging(project, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="meid_bench"):
        train(TrainOptions(split=project / "split", recipe="late_avg", out=tmp_path / "r", epochs=1, device="cpu",
                           overrides=TINY))
    assert any(r.name == "meid_bench.train.loop" and r.getMessage().startswith("best epoch") for r in caplog.records)


def test_recipes_command_lists_and_resolves(tmp_path):
    listed = invoke("recipes")
    assert listed.exit_code == 0
    assert all(re.search(rf"^  {name} ", listed.output, re.M) for name in list_recipes())
    as_json = only_json(invoke("recipes", "--json"))
    assert sorted(r["name"] for r in as_json["recipes"]) == list_recipes()

    overrides = ["optim.lr=1e-3", "optim.milestones=[30,36]"]
    resolved = invoke("recipes", "meid", *[a for o in overrides for a in ("--set", o)])
    assert resolved.exit_code == 0 and "lr: 0.001" in resolved.output
    saved = tmp_path / "meid-tuned.yaml"
    saved.write_text(resolved.stdout)
    # What it prints is a recipe: loaded back, it is the resolved recipe exactly.
    assert load_recipe(saved).to_dict() == apply_overrides(load_recipe("meid"), overrides).to_dict() | {
        "name": "meid"}
    assert only_json(invoke("recipes", "late_avg", "--json"))["model"]["name"] == "late_avg"
    bad = invoke("recipes", "meid", "--set", "optim.nope=1")
    assert bad.exit_code == 2 and "nope: unknown key" in bad.output
    assert invoke("recipes", "--set", "epochs=3").exit_code == 2
    # --benchmark resolves as training does: the benchmark's schedule, then --set on top, and the saved file keeps
    # both (training it applies no schedule again).
    tuned = invoke("recipes", "meid", "--benchmark", "charadeslt", "--set", "optim.lr=1e-3")
    saved.write_text(tuned.stdout)
    kept = load_recipe(saved)
    assert kept.optim.lr == 1e-3 and kept.schedule_from == "charadeslt" and kept.for_benchmark("charadeslt") == kept
    assert kept.epochs == load_recipe("meid").schedules["charadeslt"].epochs
    assert invoke("recipes", "meid", "--benchmark", "charadelst").exit_code == 2


def test_shipped_recipes_missing_is_an_error_not_an_empty_sweep(monkeypatch, tmp_path):
    from meid_bench.train import config

    monkeypatch.setattr(config, "recipes_dir", lambda: tmp_path)
    with pytest.raises(MeidBenchError, match="installation is incomplete"):
        config.list_recipes()


def test_python_api(project):
    assert meid_bench.Evaluator is meid_bench.evaluator.Evaluator
    assert {"Evaluator", "load_run", "load_split", "Split"} <= set(meid_bench.__all__) <= set(dir(meid_bench))
    split = load_split(project / "split")
    text = repr(split)
    groups = split.classes["group"]
    assert text.count("\n") == 0 and len(text) < 200
    assert f"{split.num_classes} classes (head {(groups == 'head').sum()}, medium {(groups == 'medium').sum()}" \
           in text and f"test {len(split.test)}" in text and split.checksum[:12] in text


def test_load_run_rebuilds_the_model_that_wrote_the_predictions(project):
    run = meid_bench.load_run(project / "run")
    assert run.recipe.name == "meid" and run.checkpoint == "best" and not run.model.training
    metrics = json.loads((project / "run" / "metrics.json").read_text())
    assert run.metrics["mAP"] == metrics["mAP"] and run.epoch == metrics["best_epoch"] + 1
    assert "meid on charadeslt" in repr(run) and "test mAP" in repr(run)
    # The rebuilt model scores the test set exactly as the run's own predictions file.
    split = load_split(project / "split")
    dataset = VideoFeatureDataset(split, project / "split" / "features.h5", "test", run.recipe.data.eval_frames,
                                  train=False)
    scores = predict(run.model, EvalStream(dataset, 64, torch.device("cpu"), None, 0), torch.device("cpu"))
    ids, recorded = read_predictions(project / "run" / "predictions" / "test.parquet",
                                     split.classes["class_key"].tolist())
    assert ids == dataset_ids(dataset) and np.array_equal(scores, recorded)
    assert meid_bench.load_run(project / "run", checkpoint="last").epoch == 2  # of 2 epochs, counted from 1
    with pytest.raises(MeidBenchError, match="choose one of best, last"):
        meid_bench.load_run(project / "run", checkpoint="final")


def test_load_run_of_a_checkpoint_without_class_groups_reads_the_split(project, tmp_path):
    # Checkpoints of meid-bench 0.1 did not record the class groups: the split (through run.json) gives them.
    shutil.copytree(project / "run", tmp_path / "old")
    payload = torch.load(tmp_path / "old" / "checkpoints" / "best.pt", weights_only=True)
    del payload["class_groups"]
    torch.save(payload, tmp_path / "old" / "checkpoints" / "best.pt")
    old, new = meid_bench.load_run(tmp_path / "old"), meid_bench.load_run(project / "run")
    features = torch.randn(3, 5, 16)
    assert torch.equal(old.model(features).logits, new.model(features).logits)


def dataset_ids(dataset: VideoFeatureDataset) -> list[str]:
    return [str(v) for v in dataset.video_ids]


def test_run_json_records_what_the_result_depends_on(project, tmp_path):
    record = json.loads((project / "run" / "run.json").read_text())
    software = record["software"]
    assert software["python"] and software["numpy"] == np.__version__ and software["torch"] == torch.__version__
    assert software["cuda"] == torch.version.cuda and software["meid_bench"] == meid_bench.__version__
    if not torch.cuda.is_available():
        assert record["device"]["type"] == "cpu" and record["device"]["name"]
    assert isinstance(record["command_line"], list) and record["command_line"]
    store = project / "split" / "features.h5"
    assert record["features"]["sha256"] == hashlib.sha256(store.read_bytes()).hexdigest()
    assert record["features"]["simulated"] is True


def test_resume_refuses_another_feature_store(project, tmp_path):
    options = TrainOptions(split=project / "split", recipe="late_avg", out=tmp_path / "r", epochs=1, device="cpu",
                           overrides=TINY)
    train(options)
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    record["features"]["sha256"] = "0" * 64
    (tmp_path / "r" / "run.json").write_text(json.dumps(record))
    with pytest.raises(MeidBenchError, match="the feature store changed"):
        train(TrainOptions(**{**options.__dict__, "epochs": 2, "resume": True}))


def test_device_names():
    assert resolve_device("cpu").type == "cpu"
    for bad in ("gpu", "cuda:", "cuda:x", "cuda1"):
        with pytest.raises(MeidBenchError, match="cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(MeidBenchError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(MeidBenchError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_sweep_spreads_runs_over_the_visible_gpus(project, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert sweep_module.sweep_devices("auto") == ["cuda:0", "cuda:1"]
    assert sweep_module.sweep_devices("cuda") == ["cuda:0", "cuda:1"]
    assert sweep_module.sweep_devices("cuda:1") == ["cuda:1"] and sweep_module.sweep_devices("cpu") == ["cpu"]

    pool = sweep_module.DevicePool(["cuda:0", "cuda:1"])
    taken = [pool.acquire() for _ in range(4)]
    assert taken == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    pool.release("cuda:1")
    assert pool.acquire() == "cuda:1"

    commands = []
    both_started = threading.Barrier(2, timeout=30)  # two jobs at a time really run side by side

    def fake_call(command, **_):
        commands.append(command)
        both_started.wait()
        return 0

    monkeypatch.setattr(sweep_module.subprocess, "call", fake_call)
    runs = sweep_module.plan_sweep(project / "split", ["late_avg", "meid"], [0, 1], tmp_path / "runs")
    assert sweep_module.run_sweep(project / "split", runs, 2, [], devices=["cuda:0", "cuda:1"]) == []
    devices = [c[c.index("--device") + 1] for c in commands]
    assert len(devices) == 4 and devices.count("cuda:0") == 2 and devices.count("cuda:1") == 2


def test_the_readme_python_snippet_runs_and_reproduces_the_runs_test_map(project, capsys):
    # The README's snippet, as printed there, on this project's split and run: every name defined, and the model
    # on the evaluation frames gives back the run's own test mAP.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    split = project / "split"
    code = (snippet.replace('"splits/charadeslt/features.h5"', repr(str(split / "features.h5")))
            .replace('"splits/charadeslt"', repr(str(split)))
            .replace('"runs/charadeslt-meid-seed0"', repr(str(project / "run"))))
    assert code.count(str(project)) == 3
    exec(compile(code, "README.md", "exec"), {})
    shown, recorded = capsys.readouterr().out.split()
    assert float(shown) == float(recorded) == json.loads((project / "run" / "metrics.json").read_text())["mAP"]


def test_a_sweep_starts_second_stages_after_every_first_stage(project, tmp_path, monkeypatch):
    with pytest.raises(MeidBenchError, match="neither finished nor in this sweep"):
        sweep_module.plan_sweep(project / "split", ["crt"], [0], tmp_path / "runs")
    runs = sweep_module.plan_sweep(project / "split", ["crt", "late_avg"], [0, 1], tmp_path / "runs")
    assert [run.first_stage for run in runs if run.recipe == "crt"] == [
        tmp_path / "runs" / "charadeslt-late_avg-seed0", tmp_path / "runs" / "charadeslt-late_avg-seed1"]
    started = []
    monkeypatch.setattr(sweep_module.subprocess, "call",
                        lambda command, **_: started.append(command[command.index("--recipe") + 1]) or 0)
    assert sweep_module.run_sweep(project / "split", runs, 2, []) == []
    assert started == ["late_avg", "late_avg", "crt", "crt"]
