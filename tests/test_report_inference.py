"""Intervals with seed and test-set noise, equivalence tests, Holm's adjustment and the verdicts: each checked
against a case whose answer is known, then end to end in `meid-bench report --reference`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import average_precision_score

from helpers_eval import make_run, make_split
from meid_bench import load_split
from meid_bench.cli import main
from meid_bench.metrics import average_precision
from meid_bench.report.inference import (MARGINS_PP, WeightedAP, bootstrap_weights, combined_interval, holm,
                                         replicate_metrics, verdict)
from meid_bench.report.paired import paired_differences


def test_weighted_ap_is_the_evaluation_ap_on_the_repeated_videos():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, (40, 5)).astype(np.float32)  # few distinct values: many ties
    targets = rng.random((40, 5)) < 0.3
    targets[0, :] = True
    ap = WeightedAP(scores, targets)
    np.testing.assert_allclose(ap.per_class(np.ones(40)), average_precision(scores, targets), rtol=0, atol=1e-12)
    for replicate in range(5):
        weights = bootstrap_weights(40, replicate)
        repeated_scores, repeated_targets = np.repeat(scores, weights, axis=0), np.repeat(targets, weights, axis=0)
        expected = [average_precision_score(repeated_targets[:, c], repeated_scores[:, c])
                    if repeated_targets[:, c].any() else np.nan for c in range(5)]
        np.testing.assert_allclose(ap.per_class(weights), expected, rtol=0, atol=1e-12)


def test_bootstrap_draws_are_fixed_by_the_replicate_and_keep_the_test_set_size():
    assert np.array_equal(bootstrap_weights(100, 3), bootstrap_weights(100, 3))
    assert not np.array_equal(bootstrap_weights(100, 3), bootstrap_weights(100, 4))
    assert bootstrap_weights(100, 7).sum() == 100


def test_combined_interval_by_hand():
    # Seeds: d = 1, 2, 3 -> mean 2, se_seed = 1 / sqrt(3). Test draws with sd 1 -> se_test = 1.
    draws = np.array([1.0, 3.0] * 50)
    se_test = float(np.std(draws, ddof=1))
    result = combined_interval([1.0, 2.0, 3.0], draws, margin=0.5)
    se_seed = 1 / math.sqrt(3)
    se = math.hypot(se_seed, se_test)
    df = 2 * (se / se_seed) ** 4
    half = stats.t.ppf(0.975, df) * se
    assert result["se_seed"] == pytest.approx(se_seed) and result["se_test"] == pytest.approx(se_test)
    assert result["df"] == pytest.approx(df) and result["low"] == pytest.approx(2 - half)
    assert result["p"] == pytest.approx(2 * stats.t.sf(2 / se, df))
    # Without the test-set component it is the seed-only t-interval.
    seeds_only = combined_interval([1.0, 2.0, 3.0], None, margin=0.5)
    assert seeds_only["low"] == pytest.approx(2 - stats.t.ppf(0.975, 2) * se_seed)
    assert combined_interval([2.0], draws, 0.5)["low"] is None  # one seed: no interval


def test_the_test_set_noise_widens_the_interval():
    narrow = combined_interval([0.3, 0.4, 0.5, 0.35, 0.45], None, margin=0.5)
    wide = combined_interval([0.3, 0.4, 0.5, 0.35, 0.45], np.random.default_rng(0).normal(0.4, 0.3, 500), 0.5)
    assert narrow["low"] > 0 > wide["low"]  # the seeds alone support a difference; with the test set they do not


def test_holm_by_hand():
    # Sorted 0.01, 0.02, 0.04 (m = 3): 0.03, 0.04, 0.04 (monotone); None is not counted.
    assert holm([0.04, 0.01, None, 0.02]) == [pytest.approx(0.04), pytest.approx(0.03), None, pytest.approx(0.04)]
    assert holm([0.9, 0.8]) == [1.0, 1.0]


@pytest.mark.parametrize("differences, spread, expected", [
    ([2.0, 2.2, 1.8, 2.1, 1.9], 0.1, "different"),       # far from zero, tight
    ([0.01, -0.02, 0.0, 0.02, -0.01], 0.05, "equivalent"),  # near zero, tight: inside +-0.5
    ([0.4, -0.6, 1.2, -0.9, 0.3], 0.8, "inconclusive"),    # near zero, wide: neither
])
def test_each_verdict_on_constructed_differences(differences, spread, expected):
    draws = np.random.default_rng(1).normal(np.mean(differences), spread, 400)
    result = combined_interval(differences, draws, margin=MARGINS_PP["mAP"])
    assert verdict(result["p"], result["tost_p"]) == expected


def _runs(rows: list[tuple]) -> pd.DataFrame:
    records = [{"benchmark": "toy", "split_checksum": "c" * 64, "method": m, "seed": s, "mAP_pct": v,
                "mAP_head_pct": v, "mAP_medium_pct": v, "mAP_tail_pct": v} for m, s, v in rows]
    frame = pd.DataFrame(records)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def test_verdicts_are_adjusted_over_the_table():
    # b - a: +1.0 +- tiny on every seed; c - a: a borderline difference that passes alone and fails after Holm
    # over the 8 claims of the table (2 methods x 4 metrics).
    base = [("a", s, 30.0) for s in range(4)]
    rows = base + [("b", s, 31.0 + 0.01 * s) for s in range(4)] + [("c", s, v) for s, v in
                                                                     enumerate([30.9, 31.1, 30.5, 31.5])]
    _, summary = paired_differences(_runs(rows), ["a"])
    table = summary.set_index("method")
    assert table.loc["b", "mAP_diff_pp_verdict"] == "different" and table.loc["b", "family_size"] == 8
    p, p_holm = table.loc["c", "mAP_diff_pp_p"], table.loc["c", "mAP_diff_pp_p_holm"]
    assert p < 0.05 < p_holm and table.loc["c", "mAP_diff_pp_verdict"] != "different"
    assert table.loc["b", "mAP_tail_diff_pp_margin"] == MARGINS_PP["mAP_tail"]


TEST_LABELS = [[0], [0, 2], [1], [3], [1, 3], [0], [4], [5, 0], [2], [4, 5], [1], [2, 3], [0, 4], [5], [3]]
IDS = [f"t{i:03d}" for i in range(len(TEST_LABELS))]


def test_report_prints_combined_intervals_verdicts_and_margins(tmp_path):
    split_dir = make_split(tmp_path / "split", TEST_LABELS)
    split = load_split(split_dir)
    targets = split.multi_hot("test").astype(np.float32)
    rng = np.random.default_rng(5)
    runs = []
    for method, signal in (("late_avg", 0.2), ("meid", 0.9)):
        for seed in range(3):
            scores = (signal * targets + rng.random(targets.shape)).astype(np.float32)
            runs.append(str(make_run(tmp_path / "runs" / f"{method}-{seed}", split_dir, split.checksum, IDS,
                                     scores, method=method, seed=seed, simulated=True)))
    result = CliRunner().invoke(main, ["report", *runs, "--reference", "late_avg", "--bootstrap", "50",
                                       "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip().startswith("meid ")]
    assert len(lines) == 4 and all("(margin ±" in line for line in lines)
    assert all(any(v in line for v in ("different", "equivalent", "inconclusive")) for line in lines)
    assert "Holm-adjusted over the 4 differences" in result.output
    summary = pd.read_csv(tmp_path / "report" / "paired_differences.csv")
    row = summary.iloc[0]
    # The test-set part is there and the combined interval contains the seed-only one's centre and is wider.
    assert row["mAP_diff_pp_se_test"] > 0
    assert row["mAP_diff_pp_combined_high"] - row["mAP_diff_pp_combined_low"] > 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "seeds only [95% CI]" in html and "equivalence margins in pp" in html
    # The replicates are those of the run's own predictions: re-scoring one run on draw 0 by hand agrees.
    draw = replicate_metrics(targets, targets, split.groups, 1)
    assert draw.shape == (1, 4) and np.all(draw[np.isfinite(draw)] == 100.0)  # perfect scores stay perfect
