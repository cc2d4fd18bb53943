"""Evaluator (validation, golden values, table), the predictions Parquet format and `meid-bench evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from helpers_eval import make_run, make_split
from meid_bench import load_split
from meid_bench.cli import main
from meid_bench.errors import MeidBenchError
from meid_bench.evaluator import Evaluator, read_predictions, write_predictions

# Test subset of the toy split: two videos without labels (t003, t007); tail classes 4 and 5 have no positive.
TEST_LABELS = [[0], [0, 2], [1], [], [3], [1, 3], [0], []]
IDS = [f"t{i:03d}" for i in range(8)]
KEYS = [f"c{k:03d}" for k in range(6)]
# Per class (hand-computed, ties as one threshold):
#   c0: positives at 0.9, 0.8, 0.1 with five negatives at 0.5 -> (1 + 1 + 3/8) / 3 = 19/24
#   c1: positives t002, t005 tied at 0.7 with negative t000    -> 2/3
#   c2: positive at 0.6 below the unlabelled t003 at 0.9        -> 1/2
#   c3: positive at 0.95, six negatives at 0.4, positive at 0.3 -> (1 + 2/8) / 2 = 5/8
SCORES = np.array([
    [0.9, 0.7, 0.0, 0.4, 0.5, 0.5],
    [0.8, 0.2, 0.6, 0.4, 0.5, 0.5],
    [0.5, 0.7, 0.0, 0.4, 0.5, 0.5],
    [0.5, 0.2, 0.9, 0.4, 0.5, 0.5],
    [0.5, 0.2, 0.0, 0.95, 0.5, 0.5],
    [0.5, 0.7, 0.0, 0.3, 0.5, 0.5],
    [0.1, 0.2, 0.0, 0.4, 0.5, 0.5],
    [0.5, 0.2, 0.0, 0.4, 0.5, 0.5],
], dtype=np.float32)


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("eval") / "toy", TEST_LABELS)


@pytest.fixture(scope="module")
def evaluator(split_dir):
    return Evaluator(split_dir)


def test_golden_values(evaluator):
    result = evaluator.eval(IDS, SCORES)
    assert result["per_class_ap"][:4] == pytest.approx([19 / 24, 2 / 3, 1 / 2, 5 / 8], abs=1e-12)
    assert result["per_class_ap"][4:] == [None, None]
    assert result["mAP"] == pytest.approx(31 / 48, abs=1e-12)
    assert result["mAP_head"] == pytest.approx(35 / 48, abs=1e-12)
    assert result["mAP_medium"] == pytest.approx(9 / 16, abs=1e-12)
    assert result["mAP_tail"] is None
    assert (result["classes_evaluated"], result["classes_without_positives"]) == (4, 2)
    assert (result["classes_evaluated_head"], result["classes_evaluated_medium"],
            result["classes_evaluated_tail"], result["classes_without_positives_tail"]) == (2, 2, 0, 2)
    # t006's label c0 has five classes scoring >= 0.1: a miss at k=1, a hit at k=5.
    assert result["top1"] == pytest.approx(5 / 6) and result["top5"] == 1.0
    assert (result["topk_videos_evaluated"], result["videos_without_labels"]) == (6, 2)
    assert result["score_scale"] == "probability" and result["subset"] == "test" and result["num_videos"] == 8
    assert result["split_checksum"] == load_split(evaluator.split.path).checksum
    json.dumps(result, allow_nan=False)  # plain and JSON-ready


def test_rows_are_reordered_by_id_and_torch_is_accepted(evaluator):
    order = np.random.default_rng(0).permutation(8)
    shuffled = evaluator.eval([IDS[i] for i in order], SCORES[order])
    assert shuffled == evaluator.eval(IDS, SCORES)
    logits = torch.logit(torch.from_numpy(SCORES).double().clamp(1e-6, 1 - 1e-6))
    from_logits = evaluator.eval(IDS, logits)
    assert from_logits["score_scale"] == "logit"
    assert from_logits["per_class_ap"] == pytest.approx(shuffled["per_class_ap"])


@pytest.mark.parametrize("ids, scores, message", [
    (IDS[:-1], SCORES[:-1], "1 videos of the split's 'test' subset have no scores"),
    (IDS + ["zzz"], np.vstack([SCORES, SCORES[:1]]), "not in the split's 'test' subset"),
    (IDS[:-1] + ["t000"], SCORES, "appear more than once"),
    (IDS, SCORES[:, :5], "scores have 5 classes"),
    (IDS[:-1], SCORES, "7 video ids for 8 rows"),
])
def test_bad_ids_and_shapes(evaluator, ids, scores, message):
    with pytest.raises(MeidBenchError, match=message):
        evaluator.eval(ids, scores)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_name_the_video_and_class(evaluator, value):
    scores = SCORES.copy()
    scores[4, 2] = value
    with pytest.raises(MeidBenchError, match=r"1 scores are NaN or infinite \(first: video 't004', class c002"):
        evaluator.eval(IDS, scores)


def test_expected_input_format_and_table(evaluator):
    expected = evaluator.expected_input_format
    assert (expected["num_videos"], expected["num_classes"], expected["class_keys"]) == (8, 6, KEYS)
    assert "video_id" in expected["parquet"]
    text = evaluator.table(evaluator.eval(IDS, SCORES))
    assert "0.6458" in text and "n/a" in text  # overall 31/48; tail has no evaluated class
    assert "2 classes have no positive" in text and "2 videos have no label" in text
    with pytest.raises(MeidBenchError, match="unknown subset"):
        Evaluator(evaluator.split, subset="dev")


def test_predictions_round_trip_keeps_float64(tmp_path, evaluator):
    wide = SCORES.astype(np.float64) + 1e-12  # differences float32 could not hold
    path = write_predictions(tmp_path / "p.parquet", IDS, wide, KEYS, dtype=np.float64)
    ids, scores = read_predictions(path, KEYS)
    assert ids == IDS and scores.dtype == np.float64 and np.array_equal(scores, wide)
    with pytest.raises(MeidBenchError, match="already exists"):
        write_predictions(path, IDS, wide, KEYS)
    # Class columns are found by name, not position.
    table = pq.read_table(path)
    pq.write_table(table.select(["video_id"] + KEYS[::-1]), tmp_path / "reversed.parquet")
    assert np.array_equal(read_predictions(tmp_path / "reversed.parquet", KEYS)[1], wide)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop_columns(["c003"]), "1 class columns are missing"),
    (lambda t: t.append_column("c099", pa.array([0.0] * 8)), "not classes of the split"),
    (lambda t: t.drop_columns(["video_id"]), "no 'video_id' column"),
    (lambda t: t.set_column(0, "video_id", pa.array(range(8))), "write the ids as strings"),
    (lambda t: t.set_column(1, "c000", pa.array([None] + [0.5] * 7, pa.float32())), "has 1 nulls"),
    (lambda t: t.set_column(1, "c000", pa.array([1] * 8)), "float32 or float64"),
])
def test_bad_predictions_files(tmp_path, change, message):
    good = write_predictions(tmp_path / "good.parquet", IDS, SCORES, KEYS)
    pq.write_table(change(pq.read_table(good)), tmp_path / "bad.parquet")
    with pytest.raises(MeidBenchError, match=message):
        read_predictions(tmp_path / "bad.parquet", KEYS)


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_cli_evaluates_a_run_and_writes_metrics_and_per_class(tmp_path, split_dir, evaluator):
    split = load_split(split_dir)
    run = make_run(tmp_path / "runs" / "base", split_dir, split.checksum, IDS[::-1], SCORES[::-1].copy(),
                   subsets=("test", "val"))
    result = run_cli("evaluate", "--run", str(run))
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(evaluator.eval(IDS, SCORES)))
    per_class = pd.read_csv(run / "per_class.csv")
    assert list(per_class.columns) == ["class_id", "class_key", "name", "group", "train_count", "test_positives",
                                       "ap"]
    assert per_class["test_positives"].tolist() == [3, 2, 1, 2, 0, 0]
    assert per_class["ap"].iloc[3] == pytest.approx(5 / 8) and per_class["ap"].isna().tolist()[4:] == [True, True]
    # Evaluating the run again re-scores it into its own folder (no --force needed), keeping fields it does not
    # compute; into another folder the existing files need --force.
    metrics["best_epoch"] = 4
    (run / "metrics.json").write_text(json.dumps(metrics))
    again = run_cli("evaluate", "--run", str(run))
    assert again.exit_code == 0 and "re-scored the run" in again.output and "keeping best_epoch" in again.output
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert run_cli("evaluate", "--run", str(run), "--force").exit_code == 0
    assert json.loads((run / "metrics.json").read_text()) == metrics
    elsewhere = run_cli("evaluate", "--run", str(run), "--out", str(tmp_path / "out"))
    assert elsewhere.exit_code == 0 and "re-scored" not in elsewhere.output
    assert "already exists" in run_cli("evaluate", "--run", str(run), "--out", str(tmp_path / "out")).output
    # A file in the run folder that is not this run's metrics or per-class file is not replaced without --force.
    for name, text in (("metrics.json", '{"notes": "mine"}'), ("per_class.csv", "my,own,table\n")):
        saved = (run / name).read_text()
        (run / name).write_text(text)
        refused = run_cli("evaluate", "--run", str(run))
        assert refused.exit_code == 2 and name in refused.output and (run / name).read_text() == text
        assert "Traceback" not in refused.output and refused.output.count("\n") == 1
        (run / name).write_text(saved)
    # The val predictions hold test ids: a clear error, not a score.
    val = run_cli("evaluate", "--run", str(run), "--subset", "val")
    assert val.exit_code == 2 and "6 videos of the split's 'val' subset have no scores" in val.output
    assert "8 given ids are not in it" in val.output


def test_cli_evaluates_an_outside_predictions_file(tmp_path, split_dir):
    predictions = write_predictions(tmp_path / "mine.parquet", IDS, SCORES, KEYS)
    out = tmp_path / "out"
    result = run_cli("evaluate", "--split", str(split_dir), "--predictions", str(predictions), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "0.6458" in result.output
    assert json.loads((out / "metrics.json").read_text())["mAP"] == pytest.approx(31 / 48)
    assert (out / "per_class.csv").is_file()


def test_cli_bad_input_exits_2_with_one_line(tmp_path, split_dir):
    other = make_split(tmp_path / "other", TEST_LABELS, seed=1)  # same shape, different split identity
    mismatched = make_run(tmp_path / "runs" / "mismatch", other, load_split(split_dir).checksum, IDS, SCORES)
    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    bad_scores = SCORES.copy()
    bad_scores[0, 0] = np.nan
    nan_file = write_predictions(tmp_path / "nan.parquet", IDS, bad_scores, KEYS)
    cases = [
        (["evaluate", "--run", str(mismatched)], "does not match the split folder"),
        (["evaluate", "--run", str(empty)], "run.json: missing"),
        (["evaluate", "--split", str(split_dir), "--predictions", str(nan_file)], "NaN or infinite"),
        (["evaluate", "--predictions", str(nan_file)], "needs --split"),
        (["evaluate", "--split", str(split_dir)], "exactly one of --run"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert result.output.count("\n") == 1
