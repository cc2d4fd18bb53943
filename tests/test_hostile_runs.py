"""Run folders damaged every way we could think of (checkpoints, log.jsonl, run.json, metrics.json, predictions),
bad recipes and options, outputs that collide, and runs interrupted or diverging: each damaged input is one clear
error (exit status 2, nothing written); each interruption leaves a state the next command handles."""

from __future__ import annotations

import json
import os
import pickle
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hostile_support import (RUN_EPOCHS, TRUNCATIONS, WRONG_VALUES, assert_clean_outcome, assert_refused,
                             edit_json, invoke, leaf_paths, random_bytes, resume_args, set_path, train_args,
                             truncate, workspace)
from meid_bench.errors import MeidBenchError
from meid_bench.train import loop
from meid_bench.train.checkpoint import load_checkpoint


def last_pt(ws):
    return ws / "run" / "checkpoints" / "last.pt"


class Replace:
    """What an edit returns to replace the whole payload (any other return value is ignored)."""

    def __init__(self, value):
        self.value = value


def edit_checkpoint(path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    result = edit(payload)
    torch.save(result.value if isinstance(result, Replace) else payload, path)


# -- checkpoints (read by --resume) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_truncated_checkpoint(hostile_base, tmp_path, keep):
    ws = workspace(hostile_base, tmp_path)
    truncate(last_pt(ws), keep)
    assert_refused(ws, resume_args(ws), 2, "last.pt: not a readable meid-bench checkpoint")


@pytest.mark.parametrize("seed", range(3))
def test_random_checkpoint(hostile_base, tmp_path, seed):
    ws = workspace(hostile_base, tmp_path)
    random_bytes(last_pt(ws), seed)
    assert_refused(ws, resume_args(ws), 2, "last.pt: not a readable meid-bench checkpoint")


def test_pickle_payload_never_runs(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    last_pt(ws).write_bytes(pickle.dumps({"format": "meid-bench-checkpoint", "x": Payload()}))
    assert_refused(ws, resume_args(ws), 2, "not a readable meid-bench checkpoint")
    torch.save({"format": "meid-bench-checkpoint", "x": Payload()}, last_pt(ws))
    assert_refused(ws, resume_args(ws), 2, "not a readable meid-bench checkpoint")
    assert not marker.exists()


def _first_weight(payload):
    return next(iter(payload["model"]))


CHECKPOINT_DAMAGE = [
    (lambda p: Replace([p]), "not a meid-bench checkpoint"),
    (lambda p: p.pop("format"), "not a meid-bench checkpoint"),
    (lambda p: p.update(version=2), "checkpoint version 2"),
    (lambda p: p.pop("model"), "field 'model': missing"),
    (lambda p: p.update(model=[1, 2]), "field 'model': expected an object"),
    (lambda p: p["model"].update({_first_weight(p): torch.zeros(3)}), "has shape [3], the model has"),
    (lambda p: p["model"].update(junk=torch.zeros(1)), "unknown entry 'junk'"),
    (lambda p: p["model"].pop(_first_weight(p)), "lacks"),
    (lambda p: p["model"].update({_first_weight(p): "weights"}), "is not a named tensor"),
    (lambda p: p["model"][_first_weight(p)].view(-1).__setitem__(0, float("nan")), "holds NaN or infinite"),
    (lambda p: p["model"][_first_weight(p)].view(-1).__setitem__(0, float("inf")), "holds NaN or infinite"),
    (lambda p: p.update(recipe="late_avg"), "field 'recipe': expected an object"),
    (lambda p: p.pop("recipe"), "field 'recipe': missing"),
    (lambda p: p["recipe"].update(model="late_avg"), "model: expected a mapping"),
    (lambda p: p["recipe"]["optim"].update(lr=float("nan")), "optim.lr: expected a finite number"),
    (lambda p: p["recipe"].update(epochz=3), "epochz: unknown key"),
    (lambda p: p.update(epoch="1"), "field 'epoch': expected an integer"),
    (lambda p: p.update(epoch=-5), "field 'epoch': expected an integer >= 0"),
    (lambda p: p.update(epoch=10 ** 6), "recipe trains 2 epochs"),
    (lambda p: p.update(epoch=0), "field 'scheduler' does not belong to epoch 0"),
    (lambda p: p.pop("optimizer"), "field 'optimizer': missing"),
    (lambda p: p["optimizer"].update(state=1), "'optimizer.state': expected an object"),
    (lambda p: p["optimizer"].pop("param_groups"), "'optimizer.param_groups': missing"),
    (lambda p: p["optimizer"]["param_groups"][0].update(params=[0]), "parameter groups of sizes [1]"),
    (lambda p: p["optimizer"]["state"][0].update(exp_avg=torch.zeros(7, 7)), "'optimizer.state.0.exp_avg'"),
    (lambda p: p["optimizer"]["state"].update({99: {"step": torch.zeros(())}}), "names parameter 99"),
    (lambda p: p.update(scheduler=[]), "field 'scheduler': expected an object"),
    (lambda p: p["scheduler"].update(last_epoch="2"), "'scheduler.last_epoch'"),
    (lambda p: p.update(torch_rng=torch.zeros(3)), "field 'torch_rng'"),
    (lambda p: p.update(torch_rng=torch.zeros(3, dtype=torch.uint8)), "field 'torch_rng' is not a random"),
    (lambda p: p.update(best={"epoch": "x"}), "'best.epoch'"),
    (lambda p: p["best"].update(val_mAP=float("nan")), "'best.val_mAP'"),
    (lambda p: p["best"].update(epoch=5), "'best.epoch': expected an integer >= -1 and <= 1"),
    (lambda p: p.update(input_dim=16), "features of dimension 16, the features given have 4"),
    (lambda p: p.update(input_dim=0), "field 'input_dim'"),
    (lambda p: p.update(num_classes=3), "checkpoint of 3 classes, the split has 6"),
    (lambda p: p.pop("split_checksum"), "field 'split_checksum': missing"),
    (lambda p: p.update(split_checksum="0" * 64), "checkpoint trained on another split"),
    (lambda p: p.update(seed="0"), "field 'seed': expected an integer"),
    (lambda p: p.update(seed=1), "started with another recipe, --epochs or --seed"),
    (lambda p: p["recipe"]["model"].update(name="meid"), "checkpoint of model 'meid'"),
]


@pytest.mark.parametrize("edit, fragment", CHECKPOINT_DAMAGE, ids=[f"{i}-{f[:40]}" for i, (_, f) in
                                                                   enumerate(CHECKPOINT_DAMAGE)])
def test_damaged_checkpoint_field(hostile_base, tmp_path, edit, fragment):
    ws = workspace(hostile_base, tmp_path)
    edit_checkpoint(last_pt(ws), edit)
    assert_refused(ws, resume_args(ws), 2, fragment)


def test_checkpoint_bit_flips_are_refused_or_harmless(hostile_base, tmp_path):
    """Bytes changed anywhere: a clear error, or (a flip in padding) exactly the original content - never a
    silently different weight (torch checks no CRC; load_checkpoint checks every record's)."""
    source = hostile_base / "run" / "checkpoints" / "last.pt"
    original, good = torch.load(source, weights_only=True), source.read_bytes()
    rng = random.Random(2)
    target = tmp_path / "last.pt"
    refused = 0
    for _ in range(120):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        target.write_bytes(bytes(data))
        try:
            payload = load_checkpoint(target)
        except MeidBenchError:
            refused += 1
            continue
        assert payload["epoch"] == original["epoch"] and payload["recipe"] == original["recipe"]
        assert all(torch.equal(payload["model"][k], original["model"][k]) for k in original["model"])
    assert refused > 60


def test_damaged_best_checkpoint_at_the_end_of_a_run(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    edit_checkpoint(ws / "run" / "checkpoints" / "best.pt", lambda p: p["model"].update(junk=torch.zeros(1)))
    result = invoke(*resume_args(ws))  # nothing left to train: straight to predicting with best.pt
    assert result.exit_code == 2 and "best.pt: field 'model' has an unknown entry 'junk'" in result.stderr


def test_resume_with_features_of_another_dimension(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    assert invoke("features", "synth", "--split", ws / "split", "--out", ws / "wide.h5", "--dim", "16").exit_code == 0
    assert_refused(ws, resume_args(ws, "--features", ws / "wide.h5"), 2,
                   "last.pt: checkpoint trained on features of dimension 4, the features given have 16")


# -- log.jsonl (read by --resume) ----------------------------------------------------------------------------------

def log_of(ws):
    return ws / "run" / "log.jsonl"


def unfinished(ws):
    """The workspace's run, as if killed after its last epoch was logged but before its predictions."""
    for name in ("metrics.json", "metrics_val.json"):
        (ws / "run" / name).unlink()
    return ws


@pytest.mark.parametrize("cut", [1, 7, 40])
def test_log_line_cut_off_is_dropped_with_a_warning(hostile_base, tmp_path, cut):
    ws = unfinished(workspace(hostile_base, tmp_path))
    lines = log_of(ws).read_text().splitlines()
    log_of(ws).write_text("\n".join(lines[:1]) + "\n" + lines[1][:cut])  # epoch 2's line cut mid-write
    result = invoke(*resume_args(ws))
    assert result.exit_code == 0, result.output
    assert "log.jsonl: line 2 was cut off (an interrupted run) and is dropped" in result.stderr
    assert [json.loads(line)["epoch"] for line in log_of(ws).read_text().splitlines()] == [0]
    assert (ws / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("text, fragment", [
    ('{"epoch": 0}\nnot json\n{"epoch": 1}\n', "log.jsonl: line 2: not a JSON object"),
    ('{"epoch": "a"}\n', "line 1: field 'epoch': expected an integer"),
    ('{"epoch": -1}\n', "line 1: field 'epoch'"),
    ("[1]\n", "line 1: the top level: expected an object"),
    ('{"epoch": 0, "loss_classification": NaN}\n', "line 1: not a JSON object (NaN is not a number"),
    ('{"epoch": 0, "val_mAP": "high"}\n', "field 'val_mAP'"),
    ("\x00\x01garbage without a newline", "line 1: not a JSON object"),
    ("\n", "line 1: not a JSON object"),
], ids=["garbage-line", "epoch-text", "epoch-negative", "not-object", "nan", "map-text", "binary", "empty-line"])
def test_damaged_log(hostile_base, tmp_path, text, fragment):
    ws = unfinished(workspace(hostile_base, tmp_path))
    log_of(ws).write_text(text)
    assert_refused(ws, resume_args(ws), 2, fragment)


@pytest.mark.parametrize("seed", range(3))
def test_random_log(hostile_base, tmp_path, seed):
    ws = unfinished(workspace(hostile_base, tmp_path))
    random_bytes(log_of(ws), seed, 300)
    assert_refused(ws, resume_args(ws), 2, "log.jsonl: line")


# -- run.json and metrics.json (read by evaluate and report) ---------------------------------------------------------

def evaluate_args(ws):
    return ["evaluate", "--run", ws / "run", "--out", ws / "ev"]


def report_args(ws):
    return ["report", ws / "run", "--out", ws / "rep"]


RUN_JSON_DAMAGE = [
    ("split", "delete", "field 'split': missing"),
    ("split", "x", "field 'split': expected an object"),
    ("split.path", 3, "'split.path': expected a string"),
    ("split.path", "", "'split.path': is empty"),
    ("split.checksum", 3, "'split.checksum': expected a string"),
    ("split.checksum", "abc", "'split.checksum'"),
    ("recipe", [], "field 'recipe': expected an object"),
    ("name", 5, "field 'name': expected a string"),
    ("method", [1], "field 'method'"),
    ("seed", "zero", "field 'seed': expected an integer"),
    ("seed", 1.5, "field 'seed'"),
    ("features", "x", "field 'features': expected an object"),
    ("features.simulated", "no", "'features.simulated': expected true or false"),
    ("features.dim", 0, "'features.dim'"),
    ("format", "meid-bench-split", "field 'format'"),
    ("format_version", "1", "field 'format_version'"),
]


@pytest.mark.parametrize("field, value, fragment", RUN_JSON_DAMAGE, ids=[f"{f}={v}" for f, v, _ in RUN_JSON_DAMAGE])
def test_damaged_run_json(hostile_base, tmp_path, field, value, fragment):
    ws = workspace(hostile_base, tmp_path)
    edit_json(ws / "run" / "run.json", lambda r: set_path(r, field, value, delete=value == "delete"))
    assert_refused(ws, evaluate_args(ws), 2, "run.json", fragment)
    assert_refused(ws, report_args(ws), 2, "run.json", fragment)


METRICS_DAMAGE = [
    ("mAP", "high", "field 'mAP': expected a finite number >= 0 and <= 1"),
    ("mAP", float("nan"), "NaN is not a number JSON allows"),
    ("mAP_head", float("inf"), "Infinity is not a number JSON allows"),
    ("mAP", 7.5, "field 'mAP'"),
    ("mAP_tail", -0.5, "field 'mAP_tail'"),
    ("mAP", "delete", "field 'mAP': missing"),
    ("per_class_ap", "x" * 6, "field 'per_class_ap': expected a list"),
    ("per_class_ap", {"a": 1}, "field 'per_class_ap': expected a list"),
    ("per_class_ap", [0.5] * 3, "'per_class_ap': has 3 entries, expected 6"),
    ("per_class_ap", ["x"] * 6, "'per_class_ap': entry 0"),
    ("per_class_ap", [1.5] * 6, "'per_class_ap': entry 0"),
    ("top1", "x", "field 'top1'"),
    ("classes_evaluated", "x", "field 'classes_evaluated'"),
    ("classes_evaluated_tail", -1, "field 'classes_evaluated_tail'"),
    ("best_epoch", "x", "field 'best_epoch'"),
    ("subset", 1, "field 'subset'"),
    ("subset", "val", "subset is 'val', expected 'test'"),
    ("split_checksum", [1], "field 'split_checksum'"),
    ("split_checksum", "0" * 64, "split_checksum does not match"),
    ("num_classes", 0, "field 'num_classes'"),
]


@pytest.mark.parametrize("field, value, fragment", METRICS_DAMAGE, ids=[f"{f}={str(v)[:8]}" for f, v, _ in
                                                                          METRICS_DAMAGE])
def test_damaged_metrics_json(hostile_base, tmp_path, field, value, fragment):
    ws = workspace(hostile_base, tmp_path)
    path = ws / "run" / "metrics.json"
    edit_json(path, lambda r: set_path(r, field, value, delete=value == "delete"))  # json writes NaN, Infinity
    assert_refused(ws, report_args(ws), 2, "metrics.json", fragment)


@pytest.mark.parametrize("name", ["run.json", "metrics.json"])
@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_truncated_run_records(hostile_base, tmp_path, name, keep):
    ws = workspace(hostile_base, tmp_path)
    truncate(ws / "run" / name, keep)
    assert_refused(ws, report_args(ws), 2, name)


@pytest.mark.parametrize("name", ["run.json", "metrics.json"])
def test_run_records_fuzz_never_crash(hostile_base, tmp_path, name):
    record = json.loads((hostile_base / "run" / name).read_text())
    cases = [(path, value) for path in leaf_paths(record) for value in WRONG_VALUES + ("delete",)]
    for index, (path, value) in enumerate(random.Random(1).sample(cases, 25)):
        ws = workspace(hostile_base, tmp_path / str(index))
        edit_json(ws / "run" / name, lambda r: set_path(r, path, value, delete=value == "delete"))
        # evaluate reads run.json (and draws nothing); only the report reads metrics.json
        assert_clean_outcome(ws, evaluate_args(ws) if name == "run.json" else report_args(ws))


# -- predictions (read by evaluate) ----------------------------------------------------------------------------------

def predictions(ws):
    return ws / "run" / "predictions" / "test.parquet"


def evaluate_file_args(ws):
    return ["evaluate", "--split", ws / "split", "--predictions", predictions(ws), "--out", ws / "ev"]


def edit_predictions(edit):
    def apply(path):
        pq.write_table(edit(pq.read_table(path)), path)
    return apply


def _invalid_utf8(table):
    ids = [v.encode() for v in table.column("video_id").to_pylist()]
    ids[0] = b"\xff\xfe"
    raw = pa.array(ids, pa.binary())
    return table.set_column(0, "video_id", pa.Array.from_buffers(pa.string(), len(raw), raw.buffers()))


PREDICTION_DAMAGE = [
    (lambda p: truncate(p, 200), "unreadable Parquet"),
    (lambda p: truncate(p, -2), "unreadable Parquet"),
    (lambda p: truncate(p, 0), "unreadable Parquet"),
    (lambda p: random_bytes(p, 0), "unreadable Parquet"),
    (edit_predictions(_invalid_utf8), "column 'video_id': invalid data"),
    (edit_predictions(lambda t: t.append_column(t.column_names[1], t.column(1))), "column 'c000' appears more"),
    (edit_predictions(lambda t: t.append_column("video_id", t.column(0))), "column 'video_id' appears more"),
    (edit_predictions(lambda t: t.set_column(1, "c000", pa.array([float("nan")] * t.num_rows, pa.float32()))),
     "NaN or infinite"),
    (edit_predictions(lambda t: t.set_column(1, "c000", pa.array([float("-inf")] * t.num_rows))),
     "NaN or infinite"),
    (edit_predictions(lambda t: t.set_column(1, "c000", pa.array(["x"] * t.num_rows))), "has type string"),
    (edit_predictions(lambda t: t.set_column(1, "c000", pa.array([[1.0]] * t.num_rows))), "has type list"),
    (edit_predictions(lambda t: t.set_column(1, "c000", pa.array([None] * t.num_rows, pa.float32()))), "nulls"),
    (edit_predictions(lambda t: t.drop_columns(["video_id"])), "no 'video_id' column"),
    (edit_predictions(lambda t: t.drop_columns(["c002"])), "class columns are missing"),
    (edit_predictions(lambda t: t.append_column("c999", t.column(1))), "not classes of the split"),
    (edit_predictions(lambda t: t.slice(0, 0)), "have no scores"),
    (edit_predictions(lambda t: t.slice(1)), "have no scores"),
    (edit_predictions(lambda t: pa.concat_tables([t, t.slice(0, 1)])), "appear more than once"),
    (edit_predictions(lambda t: t.set_column(0, "video_id", pa.array(range(t.num_rows)))), "has type int64"),
    (lambda p: (p.unlink(), p.mkdir()), "test.parquet"),
]


@pytest.mark.parametrize("edit, fragment", PREDICTION_DAMAGE, ids=[f"{i}-{f[:30]}" for i, (_, f) in
                                                                    enumerate(PREDICTION_DAMAGE)])
def test_damaged_predictions(hostile_base, tmp_path, edit, fragment):
    ws = workspace(hostile_base, tmp_path)
    edit(predictions(ws))
    assert_refused(ws, evaluate_file_args(ws), 2, "test.parquet", fragment)
    assert_refused(ws, evaluate_args(ws), 2, "test.parquet", fragment)


# -- recipes and options -----------------------------------------------------------------------------------------

RECIPE_DAMAGE = [
    ("model: {name: late_avg}\noptim: {lr: .nan}\n", "optim.lr: expected a finite number, got float nan"),
    ("model: {name: late_avg}\noptim: {lr: .inf}\n", "optim.lr: expected a finite number"),
    ("model: {name: late_avg}\noptim: {lr: fast}\n", "optim.lr: expected a finite number, got str"),
    ("model: {name: late_avg}\noptim: {weight_decay: -1}\n", "optim.weight_decay"),
    ("model: {name: late_avg, dropout: .nan}\n", "model.dropout"),
    ("model: {name: late_avg, hidden: -4}\n", "model.hidden"),
    ("model: {name: late_avg}\nepochs: 0\n", "epochs: must be >= 1"),
    ("model: {name: late_avg}\noptim: {milestones: abc}\n", "optim.milestones"),
    ("model: {name: nothing}\n", "unknown model 'nothing'"),
    ("- 1\n- 2\n", "expected a mapping of recipe keys"),
    ("model: {name: late_avg\n", "invalid YAML"),
    ("model: {name: late_avg}\nmodel: {name: meid}\n", "duplicate key"),
    ("\x00\x01\x02", "not a YAML text file"),
    ("[" * 3000, "invalid YAML"),
]


@pytest.mark.parametrize("text, fragment", RECIPE_DAMAGE, ids=[f"{i}-{f[:30]}" for i, (_, f) in
                                                                enumerate(RECIPE_DAMAGE)])
def test_damaged_recipe_file(hostile_base, tmp_path, text, fragment):
    ws = workspace(hostile_base, tmp_path)
    (ws / "r.yaml").write_text(text)
    args = train_args(ws)
    args[args.index("late_avg")] = ws / "r.yaml"
    assert_refused(ws, args, 2, fragment)


def test_recipe_that_is_not_utf8_or_not_a_file(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    (ws / "r.yaml").write_bytes(b"model: {name: late_avg}\n# \xff\xfe\n")
    (ws / "d.yaml").mkdir()
    for recipe, fragment in ((ws / "r.yaml", "is not UTF-8 text"), (ws / "d.yaml", "recipe file not found")):
        args = train_args(ws)
        args[args.index("late_avg")] = recipe
        assert_refused(ws, args, 2, fragment)


@pytest.mark.parametrize("option, fragment", [
    (("--set", "optim.lr=.nan"), "optim.lr: expected a finite number"),
    (("--set", "optim.lr=.inf"), "optim.lr: expected a finite number"),
    (("--set", "optim.lr=-1"), "optim.lr: must be > 0"),
    (("--set", "optim.weight_decay=.nan"), "optim.weight_decay"),
    (("--set", "optim.gamma=.nan"), "optim.gamma"),
    (("--set", "optim.clip_grad_norm=.inf"), "optim.clip_grad_norm"),
    (("--set", "model.dropout=.nan"), "model.dropout"),
    (("--set", "eval_every=0"), "eval_every"),
    (("--set", "batch_size=0"), "batch_size"),
    (("--set", "data.train_frames=10000000000000"), "one batch of batch_size x data.train_frames"),
    (("--set", "model.hidden=100000000000"), "out of memory"),
    (("--set", "optim"), "expected KEY=VALUE"),
    (("--set", "optim.lr=[1"), "not valid YAML"),
    (("--workers", "-1"), "--workers"),
    (("--epochs", "0"), "--epochs 0"),
], ids=lambda value: str(value) if isinstance(value, str) else "-".join(value))
def test_absurd_train_options(hostile_base, tmp_path, option, fragment):
    ws = workspace(hostile_base, tmp_path)
    assert_refused(ws, train_args(ws, "new-run", 1, *option), 2, fragment)


# -- outputs -----------------------------------------------------------------------------------------------------

def test_train_evaluate_report_build_outputs_are_checked_first(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    (ws / "file").write_text("mine")
    (ws / "ev").mkdir()
    (ws / "ev" / "metrics.json").mkdir()
    build = ["build", "charadeslt", "--annotations", ws / "ann", "--imbalance", "5", "--out"]
    cases = [
        (train_args(ws, "file"), "file: is a file, --out names a folder"),
        (train_args(ws, "file/run"), "is a file, not a folder"),
        (evaluate_args(ws)[:-1] + [ws / "file"], "file: is a file, --out names a folder"),
        (evaluate_args(ws)[:-1] + [ws / "file" / "x"], "is a file, not a folder"),
        (evaluate_args(ws) + ["--force"], "metrics.json: is a folder"),
        (report_args(ws)[:-1] + [ws / "file", "--force"], "file: is a file, --out names a folder"),
        (report_args(ws)[:-1] + [ws / "file" / "rep"], "is a file, not a folder"),
        (build + [ws / "file", "--force"], "file: is a file, --out names a folder"),
        (build + [ws / "file" / "s"], "is a file, not a folder"),
        (build + [ws / "split"], "already exists; pass --force"),
        (["verify", ws / "split", "--write-reference", ws / "ev"], "is a folder, --write-reference names a file"),
        (["demo", "--out", ws / "file"], "file: is a file, --out names a folder"),
        (["sweep", "--split", ws / "split", "--recipes", "late_avg", "--seeds", "0", "--runs-root", ws / "file"],
         "file: is a file, --runs-root names a folder"),
    ]
    for args, fragment in cases:
        assert_refused(ws, args, 2, fragment)


# -- interrupted and diverging runs --------------------------------------------------------------------------------

def test_resume_of_a_run_killed_in_its_first_epoch_starts_from_scratch(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    killed = ws / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "run.json").write_text((ws / "run" / "run.json").read_text())
    (killed / "checkpoints" / ".last.pt.tmp").write_bytes(b"half a checkpoint")
    (killed / "log.jsonl").write_text('{"epoch": 0, "lr"')
    assert_refused(ws, train_args(ws, "killed"), 2, "already exists; pass --resume")
    result = invoke(*train_args(ws, "killed", 1, "--resume"))
    assert result.exit_code == 0, result.output
    assert "no checkpoint yet (the run stopped in its first epoch); --resume starts it from scratch" in result.stderr
    assert [json.loads(line)["epoch"] for line in (killed / "log.jsonl").read_text().splitlines()] == [0]
    assert (killed / "metrics.json").is_file()
    fresh = invoke(*train_args(ws, "fresh", 1))
    assert fresh.exit_code == 0
    assert (killed / "metrics.json").read_text() == (ws / "fresh" / "metrics.json").read_text()


def test_resume_of_a_missing_folder_starts_it(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    result = invoke(*train_args(ws, "never-started", 1, "--resume"))
    assert result.exit_code == 0 and "starts it from scratch" in result.stderr


def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(hostile_base, tmp_path,
                                                                                      monkeypatch):
    ws = workspace(hostile_base, tmp_path)
    real = loop.compute_training_step
    per_epoch = json.loads(log_of(ws).read_text().splitlines()[0])["steps"]
    steps = []

    def diverge_in_second_epoch(*args, **kwargs):
        step = real(*args, **kwargs)
        steps.append(1)
        if len(steps) == 2 * per_epoch:  # the last step of epoch 2
            step = step._replace(losses={name: value * float("nan") for name, value in step.losses.items()})
        return step

    monkeypatch.setattr(loop, "compute_training_step", diverge_in_second_epoch)
    args = train_args(ws, "diverged", 3)
    result = invoke(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (f"training stopped: the loss is nan at epoch 2, step {per_epoch}; checkpoints/last.pt keeps epoch 1"
            in result.stderr)
    run = ws / "diverged"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 0
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [0]
    assert not (run / "metrics.json").exists()
    monkeypatch.setattr(loop, "compute_training_step", real)
    resumed = invoke(*args, "--resume")  # the cause went away: --resume continues from epoch 2
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_finished_run_resumes_to_the_same_metrics(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    before = (ws / "run" / "metrics.json").read_text()
    assert invoke(*resume_args(ws)).exit_code == 0
    assert (ws / "run" / "metrics.json").read_text() == before
    assert RUN_EPOCHS == len(log_of(ws).read_text().splitlines())
