"""`meid-bench diagnose`: mirrored-pair AP by hand, and every diagnostic on a tiny MEID run on simulator v2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from meid_bench.build.features.synth import SynthConfig, synthesize_features
from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split
from meid_bench.build.synthetic import write_synthetic_charades, write_synthetic_charades_mapping
from meid_bench.cli import main
from meid_bench.diagnose import diagnose_run, mirrored_pair_ap
from meid_bench.errors import MeidBenchError
from meid_bench.train.loop import TrainOptions, train


def test_mirrored_pair_ap_by_hand():
    # Videos 0-1 show only class 0, 2-3 only class 1, 4 both (left out), 5 neither (left out).
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [0, 0]])
    perfect = np.array([[2.0, 0], [1.0, 0], [0, 1.0], [0, 2.0], [9, 0], [9, 0]])
    assert mirrored_pair_ap(perfect, targets, [(0, 1)]) == (1.0, 0.5, 1)
    # The same score for both classes: every difference ties at 0, AP = the share of positives.
    blind = np.array([[3.0, 3.0], [1, 1], [2, 2], [5, 5], [0, 0], [0, 0]])
    assert mirrored_pair_ap(blind, targets, [(0, 1)]) == (0.5, 0.5, 1)
    assert mirrored_pair_ap(perfect, targets[:, [0, 0]], [(0, 1)]) == (None, None, 0)  # no video of one side


@pytest.fixture(scope="module")
def meid_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("diag")
    annotations = write_synthetic_charades(root / "ann", num_classes=8, train_videos=160, test_videos=60, seed=1)
    write_synthetic_charades_mapping(annotations, num_classes=8)
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=5.0, val_per_class=3), annotations,
                                root / "split")
    synthesize_features(load_split(split_dir), split_dir / "features.h5", SynthConfig(version=2, dim=16, fps=1.0),
                        annotations=annotations)
    overrides = ("batch_size=16", "data.train_frames=8", "data.eval_frames=8", "model.hidden=8", "optim.lr=3e-3")
    return train(TrainOptions(split=split_dir, recipe="meid", out=root / "run", epochs=1, device="cpu",
                              overrides=overrides), echo=lambda _: None)


def test_diagnose_a_meid_run(meid_run):
    diagnosis = diagnose_run(meid_run)
    assert diagnosis.method == "meid" and diagnosis.pairs_evaluated >= 1
    assert 0.0 <= diagnosis.pair_ap <= 1.0 and 0.0 < diagnosis.pair_chance < 1.0
    assert diagnosis.cfs_ratio == 0.5 and set(diagnosis.cfs_retention) <= {"tail", "head", "background"}
    assert all(0.0 <= v <= 1.0 for v in diagnosis.cfs_retention.values())
    assert set(diagnosis.background_share) == {"all", "kept"}
    assert set(diagnosis.attention_by_activity) <= {"0", "1", "2", "3+"} and diagnosis.attention_by_activity
    only_pairs = diagnose_run(meid_run, frames=False)
    assert only_pairs.pair_ap == diagnosis.pair_ap and only_pairs.cfs_retention is None
    # Per expert from the checkpoint: the fused one is what the run's test predictions give.
    assert set(diagnosis.expert_pair_ap) == {"expert1", "expert2", "fused"}
    assert diagnosis.expert_pair_ap["fused"] == pytest.approx(diagnosis.pair_ap, abs=1e-4)
    assert only_pairs.expert_pair_ap is None
    assert set(diagnosis.pair_ceiling) == {"mean_only", "order_blind", "order_aware"}
    assert all(0.0 <= v <= 1.0 for v in diagnosis.pair_ceiling.values())
    assert diagnose_run(meid_run, frames=False, ceiling=False).pair_ceiling is None


def test_diagnose_cli_writes_json_and_needs_pairs(meid_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "d.json"
    result = runner.invoke(main, ["diagnose", str(meid_run), "--max-videos", "20", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "pair AP" in result.output and json.loads(out.read_text())["runs"][0]["method"] == "meid"
    assert "whole-video probe" in result.output and "expert 2" in result.output
    assert set(json.loads(out.read_text())["runs"][0]["expert_pair_ap"]) == {"expert1", "expert2", "fused"}
    v1 = meid_run.parent / "v1.h5"
    synthesize_features(load_split(meid_run.parent / "split"), v1, SynthConfig(dim=16, fps=1.0))
    record = json.loads((meid_run / "run.json").read_text())
    record["features"]["path"] = str(v1)
    record["features"]["sha256"] = hashlib.sha256(v1.read_bytes()).hexdigest()  # as if trained on it
    copy = tmp_path / "run-v1"
    copy.mkdir()
    (copy / "run.json").write_text(json.dumps(record))
    (copy / "predictions").mkdir()
    (copy / "predictions" / "test.parquet").write_bytes((meid_run / "predictions" / "test.parquet").read_bytes())
    with pytest.raises(MeidBenchError, match="records no mirrored class pairs"):
        diagnose_run(copy, frames=False)
    bad = runner.invoke(main, ["diagnose", str(copy), "--no-frames"])
    assert bad.exit_code == 2 and "--annotations" in bad.output
    ok = runner.invoke(main, ["diagnose", str(copy), "--no-frames", "--annotations", str(meid_run.parent / "ann")])
    assert ok.exit_code == 0, ok.output
    # With a checkpoint, a store without pairs still gets the frame diagnostics; the pair AP is n/a, and said why.
    (copy / "checkpoints").mkdir()
    (copy / "checkpoints" / "best.pt").write_bytes((meid_run / "checkpoints" / "best.pt").read_bytes())
    framed = diagnose_run(copy, max_videos=20)
    assert framed.pair_ap is None and framed.cfs_retention is not None
    shown = runner.invoke(main, ["diagnose", str(copy), "--max-videos", "20"])
    assert shown.exit_code == 0, shown.output
    assert "pair AP n/a" in shown.output and "--annotations" in shown.output
