"""The report folds several seeds of a method into mean ± standard deviation (tables and figures)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers_eval import make_run, make_split
from meid_bench import load_split
from meid_bench.evaluator import Evaluator
from meid_bench.report.assemble import by_method, collect_sections, write_report

TEST_LABELS = [[0], [0, 2], [1], [3], [1, 3], [0], [4], [5, 0], [2], [4, 5]]
IDS = [f"t{i:03d}" for i in range(len(TEST_LABELS))]


def test_seeds_are_summarised_per_method(tmp_path):
    split_dir = make_split(tmp_path / "split", TEST_LABELS)
    checksum = load_split(split_dir).checksum
    rng = np.random.default_rng(0)
    runs, maps = [], {"meid": [], "late_avg": []}
    evaluator = Evaluator(load_split(split_dir), "test")
    for method in maps:
        for seed in range(3):
            scores = rng.random((len(IDS), 6)).astype(np.float32)
            runs.append(make_run(tmp_path / "runs" / f"{method}-{seed}", split_dir, checksum, IDS, scores,
                                 method=method, seed=seed))
            maps[method].append(evaluator.eval(IDS, scores)["mAP"])
    report = write_report(runs, tmp_path / "report")
    summary = pd.read_csv(report / "results_by_method.csv").set_index("method")
    for method, values in maps.items():  # in percent
        assert summary.loc[method, "runs"] == 3 and summary.loc[method, "seeds"] == "0 1 2"
        assert np.isclose(summary.loc[method, "mAP_pct_mean"], 100 * np.mean(values))
        assert np.isclose(summary.loc[method, "mAP_pct_std"], 100 * np.std(values, ddof=1))
    markdown = (report / "results.md").read_text()
    assert f"{100 * np.mean(maps['meid']):.2f} ± {100 * np.std(maps['meid'], ddof=1):.2f}" in markdown
    names, means, spreads = by_method(collect_sections(runs)[0])
    assert names == ["meid (n=3)", "late_avg (n=3)"]
    assert np.isclose(means[0]["mAP"], np.mean(maps["meid"])) and spreads[0]["mAP"] > 0


def test_many_methods_get_readable_panels(tmp_path):
    split_dir = make_split(tmp_path / "split", TEST_LABELS)
    checksum = load_split(split_dir).checksum
    rng = np.random.default_rng(1)
    runs = [make_run(tmp_path / "runs" / f"m{k}", split_dir, checksum, IDS, rng.random((len(IDS), 6)),
                     method=f"method_{k}") for k in range(12)]
    report = write_report(runs, tmp_path / "report")
    png = next(report.glob("*/map_bars.png")).read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    # One panel per class group with a bar per run, not 48 bars side by side: the figure stays page-wide.
    assert width < 12 * 200 and height > 3 * 200  # inches at the PNG's 200 dpi
    assert all(f"method_{k}" in (report / "index.html").read_text() for k in range(12))
