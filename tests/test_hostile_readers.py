"""Second hostile round, readers: `diagnose` and `load_run` check what `evaluate` and `train` check - complete
predictions, the store the run was trained on, the run's own checkpoint - and misleading but legitimate results
are flagged."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import meid_bench
from hostile_support import assert_refused, invoke, sha256_of, train_args, workspace
from meid_bench.errors import MeidBenchError


def diagnose_args(ws):
    return ["diagnose", ws / "run", "--max-videos", "5"]


def edit_predictions(ws, edit):
    path = ws / "run" / "predictions" / "test.parquet"
    pq.write_table(edit(pq.read_table(path)), path)


def test_diagnose_runs_on_the_valid_workspace(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    result = invoke(*diagnose_args(ws))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.slice(0, t.num_rows // 2), "have no scores"),
    (lambda t: t.set_column(0, "video_id", pa.array(["../../x"] + t.column(0).to_pylist()[1:])), "have no scores"),
    (lambda t: pa.concat_tables([t, t.slice(0, 1).set_column(0, "video_id", pa.array(["../../x"]))]),
     "not in the split's 'test' subset"),
], ids=["half", "traversal-id", "extra-id"])
def test_diagnose_refuses_incomplete_or_foreign_predictions(hostile_base, tmp_path, edit, fragment):
    ws = workspace(hostile_base, tmp_path)
    edit_predictions(ws, edit)
    assert_refused(ws, diagnose_args(ws), 2, "test.parquet", fragment)


def test_diagnose_refuses_a_store_replaced_since_training(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    store = ws / "split" / "features.h5"
    before = sha256_of(store)
    result = invoke("features", "synth", "--split", ws / "split", "--out", store, "--dim", "4", "--fps", "1",
                    "--seed", "7", "--force")
    assert result.exit_code == 0, result.output
    assert sha256_of(store) != before
    assert_refused(ws, diagnose_args(ws), 2, "features.sha256", "the feature store changed since the run was trained")


def _other_run(ws, name, *extra):
    result = invoke(*train_args(ws, name, 2, *extra))
    assert result.exit_code == 0, result.output
    return ws / name


@pytest.mark.parametrize("extra, fragment", [
    (("--seed", "1"), "trained with seed 1, run.json records seed 0"),
    (("--set", "model.dropout=0.25"), "trained with another recipe than run.json records"),
], ids=["seed", "recipe"])
def test_load_run_refuses_a_checkpoint_of_another_run(hostile_base, tmp_path, extra, fragment):
    ws = workspace(hostile_base, tmp_path)
    other = _other_run(ws, "other", *extra)
    assert meid_bench.load_run(ws / "run").epoch >= 0
    shutil.copyfile(other / "checkpoints" / "best.pt", ws / "run" / "checkpoints" / "best.pt")
    with pytest.raises(MeidBenchError, match=fragment):
        meid_bench.load_run(ws / "run")


def test_store_audit_cache_notices_a_change_its_times_do_not_show(tmp_path, monkeypatch):
    """A writer with a writable memory map can change a store without its modification or status-change time
    changing (until write-back, or within one clock tick): the remembered verdict must not be trusted then."""
    import mmap

    import numpy as np

    from meid_bench.build.features import FeatureStore
    from meid_bench.build.features import audit as audit_module
    from meid_bench.build.split_io import sha256_file
    from test_feature_store import _videos, write_store

    monkeypatch.setenv("MEID_BENCH_CACHE", str(tmp_path / "cache"))
    path = write_store(tmp_path / "s.h5", _videos([6, 6], dim=4))
    store = FeatureStore(path)
    first = audit_module.audit_store(store, remember_bytes=0)
    frozen = audit_module._identity(path)
    offset = store.frames_offset
    store.close()
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as mapped:
        mapped[offset:offset + 4] = np.float32(np.nan).tobytes()  # frame 0 of video 0 through the mapping
    monkeypatch.setattr(audit_module, "_identity", lambda p: dict(frozen))  # the times did not move
    again = audit_module.audit_store(FeatureStore(path), remember_bytes=0)
    assert again.sha256 == sha256_file(path) != first.sha256 and again.non_finite == (0, 0)


def test_probe_scored_on_its_own_training_videos_is_flagged(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    same = invoke("features", "probe", "--split", ws / "split", "--train-subset", "val", "--eval-subset", "val")
    assert same.exit_code == 0, same.output
    assert "the probe is scored on the videos it was fitted on" in same.stderr
    apart = invoke("features", "probe", "--split", ws / "split", "--train-subset", "val", "--eval-subset", "test")
    assert apart.exit_code == 0 and "fitted on" not in apart.stderr


def test_report_warns_when_a_method_shares_no_seed_with_its_reference(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    other = _other_run(ws, "other", "--seed", "1", "--set", "name=late_avg_b")
    result = invoke("report", ws / "run", other, "--reference", "late_avg", "--out", ws / "rep")
    assert result.exit_code == 0, result.output
    assert "late_avg_b (seeds 1) and the reference late_avg (seeds 0) share no seed" in result.stderr
