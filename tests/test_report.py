"""`meid-bench report`: every file, runs grouped by split, the HTML self-contained and naming every run."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from helpers_eval import make_run, make_split
from meid_bench import load_split
from meid_bench.cli import main
from meid_bench.evaluator import Evaluator

TEST_LABELS = [[0], [0, 2], [1], [], [3], [1, 3], [0], [4], [5, 0], [2]]
IDS = [f"t{i:03d}" for i in range(len(TEST_LABELS))]
FIGURES = ("map_bars", "ap_vs_train_count", "class_counts", "class_share")  # runs without log.jsonl: no curves
FORMATS = ("png", "svg", "pdf")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two splits (a and b); runs alpha and beta on a (alpha already evaluated), gamma on b."""
    root = tmp_path_factory.mktemp("report")
    split_a = make_split(root / "splits" / "a", TEST_LABELS, name="toyA", seed=0)
    split_b = make_split(root / "splits" / "b", TEST_LABELS, name="toyB", seed=1)
    rng = np.random.default_rng(7)
    runs = root / "runs"
    for name, split_dir, method in (("alpha", split_a, "baseline"), ("beta", split_a, "meid"),
                                    ("gamma", split_b, "meid")):
        scores = rng.random((len(IDS), 6)).astype(np.float32)
        make_run(runs / name, split_dir, load_split(split_dir).checksum, IDS, scores, method=method,
                 recipe={"method": method, "lr": 0.001, "note": "<b>escaped</b>"})
    assert CliRunner().invoke(main, ["evaluate", "--run", str(runs / "alpha")]).exit_code == 0
    return root


def expected_map(project, run: str) -> float:
    record = json.loads((project / "runs" / run / "run.json").read_text())
    from meid_bench.evaluator import read_predictions
    evaluator = Evaluator(record["split"]["path"])
    ids, scores = read_predictions(project / "runs" / run / "predictions" / "test.parquet", evaluator.class_keys)
    return evaluator.eval(ids, scores)["mAP"]


@pytest.fixture(scope="module")
def report(project):
    out = project / "reports"
    result = CliRunner().invoke(main, ["report", "--runs-root", str(project / "runs"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_file_is_written_per_split(project, report):
    checksums = {name: load_split(project / "splits" / name).checksum for name in ("a", "b")}
    folders = sorted(p.name for p in report.iterdir() if p.is_dir())
    assert folders == sorted([f"toyA-{checksums['a'][:8]}", f"toyB-{checksums['b'][:8]}"])
    for folder in folders:
        for stem in FIGURES:
            png = (report / folder / f"{stem}.png").read_bytes()
            assert png.startswith(b"\x89PNG") and len(png) > 2000
            # 200 dpi, as the pHYs chunk records it (pixels per metre)
            phys = png.index(b"pHYs") + 4
            assert int.from_bytes(png[phys:phys + 4], "big") == round(200 / 0.0254)
            svg = (report / folder / f"{stem}.svg").read_text()
            assert "<svg" in svg and "Date" not in svg
            assert "<text" in svg and "mAP" in svg or stem != "map_bars"  # text kept as text, editable
            pdf = (report / folder / f"{stem}.pdf").read_bytes()
            assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf
    for name in ("index.html", "results.md", "results.csv"):
        assert (report / name).is_file()


def test_results_table_groups_by_split_and_matches_evaluation(project, report):
    table = pd.read_csv(report / "results.csv")
    assert table["run"].tolist() == ["alpha", "beta", "gamma"]
    assert table["benchmark"].tolist() == ["toyA", "toyA", "toyB"]
    for run in ("alpha", "beta", "gamma"):  # percent
        assert table.set_index("run").loc[run, "mAP_pct"] == pytest.approx(100 * expected_map(project, run),
                                                                             abs=1e-10)
    markdown = (report / "results.md").read_text()
    assert markdown.count("## toyA") == 1 and markdown.count("## toyB") == 1
    assert "| beta | meid | 0 |" in markdown


def test_html_is_self_contained_and_names_every_run(report):
    page = (report / "index.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 * len(FIGURES)
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing fetched from elsewhere
    for run in ("alpha", "beta", "gamma"):
        assert f"<b>{run}</b>" in page
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page  # recipes shown, and escaped
    assert "parameter imbalance" in page and "toyB" in page and "toy.csv" in page  # manifest facts


def test_single_run(project, tmp_path):
    # (Same runs, same bytes: tests/test_report_page.py, with curves and paired differences.)
    result = CliRunner().invoke(main, ["report", str(project / "runs" / "beta"), "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 4 + len(FORMATS) * len(FIGURES)  # index.html, results.md, results.csv, report.json
    # A sweep's log beside its run folder is skipped (so `report runs/*` works); any other file is an error.
    log = project / "runs" / "beta.log"
    log.write_text("epoch 1/1 ...\n")
    try:
        logged = CliRunner().invoke(main, ["report", str(project / "runs" / "beta"), str(log), "--out",
                                           str(tmp_path / "two")])
        assert logged.exit_code == 0 and "(1 runs)" in logged.output, logged.output
        stray = CliRunner().invoke(main, ["report", str(project / "runs" / "beta"), str(tmp_path / "two" / "index.html"),
                                          "--out", str(tmp_path / "three")])
        assert stray.exit_code == 2 and "no such run folder" in stray.output
    finally:
        log.unlink()


def test_bad_runs_exit_2(project, report, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir(parents=True)
    record = json.loads((project / "runs" / "beta" / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps(record))
    cases = [
        (["report", str(empty), "--out", str(tmp_path / "r1")], "run.json: missing"),
        (["report", str(unfinished), "--out", str(tmp_path / "r2")], "neither metrics.json nor predictions"),
        (["report", "--runs-root", str(empty), "--out", str(tmp_path / "r3")], "holds no run folders"),
        (["report", str(project / "runs" / "beta"), "--out", str(report)], "already exists"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
