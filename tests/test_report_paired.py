"""Paired differences between methods that share seeds: checked against a hand computation, then end to end in
the report (results.md, paired_differences*.csv, index.html)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers_eval import make_run, make_split
from meid_bench import load_split
from meid_bench.errors import MeidBenchError
from meid_bench.evaluator import Evaluator
from meid_bench.report.assemble import write_report
from meid_bench.report.paired import paired_differences, t_interval

# Quantiles of Student's t for a two-sided 95% interval, from a printed table: t(0.975, 1) and t(0.975, 2).
T_1, T_2 = 12.7062, 4.3027


def test_t_interval_by_hand():
    # d = 1, 2, 4: mean 7/3, sample sd sqrt(((1-7/3)^2 + (2-7/3)^2 + (4-7/3)^2) / 2) = sqrt(7/3)
    result = t_interval([1.0, 2.0, 4.0])
    half = T_2 * math.sqrt(7 / 3) / math.sqrt(3)
    assert result["n"] == 3 and result["mean"] == pytest.approx(7 / 3)
    assert result["sd"] == pytest.approx(math.sqrt(7 / 3))
    assert result["low"] == pytest.approx(7 / 3 - half, abs=1e-4)
    assert result["high"] == pytest.approx(7 / 3 + half, abs=1e-4)
    assert t_interval([2.5]) == {"n": 1, "mean": 2.5, "sd": None, "low": None, "high": None}
    assert t_interval([])["mean"] is None


def frame(rows: list[tuple]) -> pd.DataFrame:
    """(method, seed, mAP %, tail mAP %) rows of one split; head/medium copy mAP."""
    records = [{"benchmark": "toy", "split_checksum": "c" * 64, "method": m, "seed": s, "mAP_pct": v,
                "mAP_head_pct": v, "mAP_medium_pct": v, "mAP_tail_pct": t} for m, s, v, t in rows]
    result = pd.DataFrame(records)
    result["seed"] = result["seed"].astype("Int64")
    return result


def test_paired_differences_by_hand(caplog):
    runs = frame([("late_avg", 0, 30.0, 5.0), ("late_avg", 1, 32.0, 6.0), ("late_avg", 2, 31.0, 7.0),
                  ("meid", 0, 31.0, 6.0), ("meid", 1, 35.0, None), ("meid", 2, 31.5, 7.5),
                  ("meid", 3, 40.0, 9.0),  # seed 3: no reference run, no pair
                  ("attention", 0, 29.0, 4.0), ("attention", 1, 33.0, 6.0),
                  ("attention", 2, 30.0, 5.0), ("attention", 2, 30.5, 5.0)])  # seed 2 twice: ambiguous
    by_seed, summary = paired_differences(runs, ["late_avg", "attention", "absent"])
    table = summary.set_index(["reference", "method"])
    assert list(table.index) == [("late_avg", "meid"), ("late_avg", "attention"), ("attention", "late_avg"),
                                 ("attention", "meid")]

    # meid - late_avg on seeds 0, 1, 2: d = 1, 3, 0.5; mean 1.5; sd sqrt((0.25 + 2.25 + 1) / 2) = sqrt(1.75)
    row = table.loc[("late_avg", "meid")]
    assert row["seeds"] == 3 and row["seed_list"] == "0 1 2"
    half = T_2 * math.sqrt(1.75) / math.sqrt(3)
    assert row["mAP_diff_pp_mean"] == pytest.approx(1.5)
    assert row["mAP_diff_pp_sd"] == pytest.approx(math.sqrt(1.75))
    assert row["mAP_diff_pp_ci95_low"] == pytest.approx(1.5 - half, abs=1e-3)
    assert row["mAP_diff_pp_ci95_high"] == pytest.approx(1.5 + half, abs=1e-3)
    assert pd.isna(row["mAP_tail_diff_pp_mean"])  # seed 1 has no tail mAP: no mean over a subset of seeds
    seeds = by_seed[(by_seed["method"] == "meid") & (by_seed["reference"] == "late_avg")]
    assert seeds["seed"].tolist() == [0, 1, 2] and seeds["mAP_diff_pp"].tolist() == [1.0, 3.0, 0.5]
    assert seeds["mAP_tail_diff_pp"].tolist()[0] == 1.0 and pd.isna(seeds["mAP_tail_diff_pp"].tolist()[1])

    # attention - late_avg: seed 2 is ambiguous, so seeds 0 and 1: d = -1, 1; sd sqrt(2); half = t(1) sqrt(2)/sqrt(2)
    row = table.loc[("late_avg", "attention")]
    assert row["seed_list"] == "0 1" and row["mAP_diff_pp_mean"] == pytest.approx(0.0)
    assert row["mAP_diff_pp_ci95_low"] == pytest.approx(-T_1, abs=1e-3)
    assert row["mAP_diff_pp_ci95_high"] == pytest.approx(T_1, abs=1e-3)
    assert "2 runs of attention with seed 2" in caplog.text

    # meid - attention on seeds 0, 1: d = 2, 2; no spread, a zero-width interval
    row = table.loc[("attention", "meid")]
    assert (row["mAP_diff_pp_mean"], row["mAP_diff_pp_ci95_low"], row["mAP_diff_pp_ci95_high"]) == (2.0, 2.0, 2.0)


TEST_LABELS = [[0], [0, 2], [1], [3], [1, 3], [0], [4], [5, 0], [2], [4, 5]]
IDS = [f"t{i:03d}" for i in range(len(TEST_LABELS))]


@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory):
    """late_avg and meid with seeds 0, 1, 2 on one split (meid's scores a bit closer to the labels)."""
    root = tmp_path_factory.mktemp("paired")
    split_dir = make_split(root / "split", TEST_LABELS)
    split = load_split(split_dir)
    targets = split.multi_hot("test").astype(np.float32)
    rng = np.random.default_rng(3)
    runs, maps = [], {}
    for method, signal in (("late_avg", 0.3), ("meid", 0.6)):
        for seed in range(3):
            scores = (signal * targets + rng.random(targets.shape)).astype(np.float32)
            runs.append(make_run(root / "runs" / f"{method}-{seed}", split_dir, split.checksum, IDS, scores,
                                 method=method, seed=seed, simulated=True))
            maps[(method, seed)] = Evaluator(split, "test").eval(IDS, scores)
    return root, runs, maps


def test_report_paired_differences_match_a_hand_computation(seeded_runs):
    root, runs, maps = seeded_runs
    report = write_report(runs, root / "report")
    differences = [100 * (maps[("meid", s)]["mAP"] - maps[("late_avg", s)]["mAP"]) for s in range(3)]
    mean = sum(differences) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    low, high = mean - T_2 * sd / math.sqrt(3), mean + T_2 * sd / math.sqrt(3)

    summary = pd.read_csv(report / "paired_differences.csv")
    assert summary[["method", "reference", "seeds"]].values.tolist() == [["meid", "late_avg", 3]]
    assert summary.loc[0, "mAP_diff_pp_mean"] == pytest.approx(mean, abs=1e-9)
    assert summary.loc[0, "mAP_diff_pp_ci95_low"] == pytest.approx(low, abs=1e-3)
    assert summary.loc[0, "mAP_diff_pp_ci95_high"] == pytest.approx(high, abs=1e-3)
    by_seed = pd.read_csv(report / "paired_differences_by_seed.csv")
    assert by_seed["mAP_diff_pp"].tolist() == pytest.approx(differences, abs=1e-9)
    tail = [100 * (maps[("meid", s)]["mAP_tail"] - maps[("late_avg", s)]["mAP_tail"]) for s in range(3)]
    assert by_seed["mAP_tail_diff_pp"].tolist() == pytest.approx(tail, abs=1e-9)

    def shown(value: float) -> str:
        return f"{value:+.2f}".replace("-", "−")

    cell = f"{shown(mean)} [{shown(summary.loc[0, 'mAP_diff_pp_ci95_low'])}, " \
           f"{shown(summary.loc[0, 'mAP_diff_pp_ci95_high'])}]"
    for name in ("results.md", "index.html"):
        text = (report / name).read_text()
        assert "Paired differences" in text and cell in text, name
        assert all(shown(d) in text for d in differences), name


def test_reference_option(seeded_runs, tmp_path):
    _, runs, _ = seeded_runs
    report = write_report(runs, tmp_path / "vs-meid", references=["meid"])
    summary = pd.read_csv(report / "paired_differences.csv")
    assert summary[["method", "reference"]].values.tolist() == [["late_avg", "meid"]]
    with pytest.raises(MeidBenchError, match="attention is not a method of these runs"):
        write_report(runs, tmp_path / "bad", references=["attention"])
    # Without a shared seed there is nothing to pair, and no paired files.
    report = write_report(runs[:1] + runs[4:5], tmp_path / "unpaired")
    assert not (report / "paired_differences.csv").exists()
