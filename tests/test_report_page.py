"""The report's page structure as a reader meets it: the verdict first (SIMULATED named), the head/medium/tail
results in percent with the group sizes before any checksum, training curves from log.jsonl, and the same bytes
for the same runs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from helpers_eval import make_run, make_split
from meid_bench import load_split
from meid_bench.evaluator import Evaluator, write_predictions
from meid_bench.report.assemble import write_report

TEST_LABELS = [[0], [0, 2], [1], [3], [1, 3], [0], [4], [5, 0], [2], [4, 5]]
IDS = [f"t{i:03d}" for i in range(len(TEST_LABELS))]
VAL_IDS = [f"v{i:03d}" for i in range(6)]  # make_split's default validation subset: one video per class
KEYS = [f"c{k:03d}" for k in range(6)]


def add_log(run_dir, epochs: int, start: float) -> None:
    lines = [json.dumps({"epoch": e, "lr": 1e-3, "steps": 4, "loss_classification": start / (e + 1),
                         "train_seconds": 0.1, "val_mAP": 0.2 + 0.05 * e}) for e in range(epochs)]
    (run_dir / "log.jsonl").write_text("\n".join(lines) + '\n{"epoch": 3, "lr"')  # an interrupted last line


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Split A: late_avg and meid, seeds 0 and 1, SIMULATED features, with logs and validation predictions.
    Split B: one late_avg run on real features."""
    root = tmp_path_factory.mktemp("page")
    split_a = make_split(root / "a", TEST_LABELS, name="toyA")
    split_b = make_split(root / "b", TEST_LABELS, name="toyB", seed=1)
    rng = np.random.default_rng(11)
    runs, results = [], {}
    for method in ("late_avg", "meid"):
        for seed in (0, 1):
            scores = rng.random((len(IDS), 6)).astype(np.float32)
            run = make_run(root / "runs" / f"{method}-{seed}", split_a, load_split(split_a).checksum, IDS, scores,
                           method=method, seed=seed, simulated=True)
            val_scores = rng.random((len(VAL_IDS), 6)).astype(np.float32) + (0.3 if method == "meid" else 0.0)
            write_predictions(run / "predictions" / "val.parquet", VAL_IDS, val_scores, KEYS)
            add_log(run, 3, 1.0 if method == "meid" else 0.7)
            runs.append(run)
            results[run.name] = (Evaluator(load_split(split_a), "test").eval(IDS, scores),
                                 Evaluator(load_split(split_a), "val").eval(VAL_IDS, val_scores))
    runs.append(make_run(root / "runs" / "real", split_b, load_split(split_b).checksum, IDS,
                         rng.random((len(IDS), 6)).astype(np.float32), method="late_avg", simulated=False))
    out = write_report(runs, root / "report")
    return {"root": root, "out": out, "runs": runs, "results": results, "checksum": load_split(split_a).checksum,
            "page": (out / "index.html").read_text(), "markdown": (out / "results.md").read_text()}


def test_verdict_comes_first_and_names_simulated_features(report):
    page, markdown = report["page"], report["markdown"]
    verdicts = page.index('<ul class="verdicts">')
    assert verdicts < page.index("<table") and verdicts < page.index("<h2")
    first, second = re.findall(r"<li>(.*?)</li>", page[verdicts:page.index("</ul>", verdicts)])
    assert "toyA" in first and ">SIMULATED<" in first and "4 runs: 2 methods × 2 seeds" in first
    assert "toyB" in second and "real features" in second and "SIMULATED" not in second
    # Best method by mean validation mAP over its seeds (meid's validation scores were shifted up).
    val = {m: np.mean([report["results"][f"{m}-{s}"][1]["mAP"] for s in (0, 1)]) for m in ("late_avg", "meid")}
    best = max(val, key=val.get)
    assert f"best method by validation mAP: {best} (validation {100 * val[best]:.2f}%" in first
    top = markdown.split("\n## ")[0]
    assert "toyA: SIMULATED features" in top and "toyB: real features" in top
    table = pd.read_csv(report["out"] / "results.csv")
    assert table["features"].tolist() == ["simulated"] * 4 + ["real"]


def test_group_table_in_percent_comes_before_any_checksum(report):
    page, checksum = report["page"], report["checksum"]
    section = page[page.index('<section id="split-1">'):]
    results_table = section.index("<table")
    header = section[results_table:section.index("</thead>", results_table)]
    # group sizes in the headers (toy split: 6 classes, 2 per group), percent as the unit
    for text in ("mAP %<br><small>(6 classes)</small>", "head %<br><small>(2 classes)</small>",
                 "medium %<br><small>(2 classes)</small>", "tail %<br><small>(2 classes)</small>"):
        assert text in header
    assert page.index(checksum[:8]) > page.index('<section id="split-1">') + results_table
    # mean over seeds, in percent
    test = {m: [report["results"][f"{m}-{s}"][0] for s in (0, 1)] for m in ("late_avg", "meid")}
    for method, metrics in test.items():
        for key in ("mAP", "mAP_head", "mAP_tail"):
            values = [100 * m[key] for m in metrics]
            cell = f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
            assert cell in section[:section.index("</table>", results_table)]
            assert cell in report["markdown"]
    assert "| mAP % (6 classes) | head % (2 classes) | medium % (2 classes) | tail % (2 classes) |" in \
        report["markdown"]
    assert "Paired differences" in section and "method − late_avg" in section


def test_split_facts_are_formatted_and_the_manifest_folded(report):
    page = report["page"]
    facts = page[page.index('<table class="facts">'):]
    facts = facts[:facts.index("</table>")]
    assert "<th>parameter imbalance</th><td>20</td>" in facts and "train 96 · val 6 · test 10" in facts
    assert "<details><summary>manifest.json, every field</summary>" in page
    assert not re.search(r"\d\.\d{6,}", facts)  # no raw floats


def test_training_curves_from_log_jsonl(report):
    folder = report["out"] / f"toyA-{report['checksum'][:8]}"
    for kind in ("png", "svg", "pdf"):
        assert (folder / f"training_curves.{kind}").is_file()
    svg = (folder / "training_curves.svg").read_text()
    assert "validation mAP" in svg and "late_avg (2 runs)" in svg  # editable text, legend per method
    assert "Training loss and validation mAP" in report["page"]
    other = report["out"] / next(p.name for p in report["out"].iterdir() if p.name.startswith("toyB-"))
    assert not (other / "training_curves.png").exists()  # no log, no curves


def test_same_runs_same_bytes(report, tmp_path):
    again = write_report(report["runs"], tmp_path / "again")
    files = sorted(p.relative_to(report["out"]) for p in report["out"].rglob("*") if p.is_file())
    assert len(files) == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file()).__len__()
    for relative in files:
        assert (report["out"] / relative).read_bytes() == (again / relative).read_bytes(), relative


def _pdf_text(path) -> str:
    """The characters a matplotlib PDF draws, in order (text shown with TrueType fonts: two-byte codes in TJ)."""
    import zlib

    data = path.read_bytes()
    text = []
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:
            continue
        # Literal strings of two-byte codes, one character each (newer matplotlib) or several (older releases);
        # a backslash escapes the next byte.
        shown = b"".join(re.findall(rb"\bBT\b(.*?)\bET\b", content, re.S))  # text objects only, not font data
        for literal in re.findall(rb"\(((?:\\.|[^\\)])*)\)", shown, re.S):
            raw = re.sub(rb"\\(.)", rb"\1", literal, flags=re.S)
            text.append(raw.decode("utf-16-be", "replace") if len(raw) % 2 == 0 else raw.decode("latin-1"))
    return "".join(text)


def test_every_run_figure_and_its_pdf_carry_the_simulated_mark(report):
    folder = report["out"] / f"toyA-{report['checksum'][:8]}"
    for stem in ("map_bars", "training_curves", "ap_vs_train_count"):
        assert "SIMULATED features" in (folder / f"{stem}.svg").read_text(), stem
        assert "SIMULATED" in _pdf_text(folder / f"{stem}.pdf"), stem
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", report["page"])
    assert sum("SIMULATED features" in c for c in captions) == 3  # the run figures of split A
    real = report["out"] / next(p.name for p in report["out"].iterdir() if p.name.startswith("toyB-"))
    assert "SIMULATED" not in (real / "ap_vs_train_count.svg").read_text()


def test_split_facts_name_the_checksum_for_what_it_is(report):
    assert "split checksum (content identity: the benchmark and the tables&#x27; content hashes)" in report["page"]
    assert "sha256 of manifest.json" not in report["page"]


def test_figures_keep_readable_text_on_a_phone(report):
    # Shown at most at full size, and at least at MIN_FIGURE_SCALE of it (scrolling sideways on a narrow screen):
    # 10-point text then stays at 8 px or more, where a two-panel figure squeezed to 420 px had 5 px text.
    from meid_bench.report.page import MIN_FIGURE_SCALE

    images = re.findall(r'<div class="scroll"><img alt="[^"]*" width="(\d+)" style="min-width:(\d+)px"',
                        report["page"])
    assert len(images) == len(re.findall(r"<img ", report["page"])) >= 5
    for width, least in images:
        assert int(least) == round(int(width) * MIN_FIGURE_SCALE) and 13.9 * MIN_FIGURE_SCALE >= 8


def _tick_label_boxes(figure, axis):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return [label.get_window_extent(renderer) for label in axis.get_ticklabels() if label.get_text()]


@pytest.mark.parametrize("names", [["charadeslt-late_avg-seed0"], ["charadeslt-late_avg-seed0", "meid-seed0"]])
def test_map_bar_group_labels_do_not_collide(names):
    from meid_bench.report import plots

    metrics = [{"mAP": 0.3, "mAP_head": 0.4, "mAP_medium": 0.2, "mAP_tail": 0.1}] * len(names)
    figure = plots.map_bars(names, metrics, "Test mAP by class group\ncharadeslt, SIMULATED features",
                            group_sizes={"all": 157, "head": 40, "medium": 77, "tail": 40})
    boxes = _tick_label_boxes(figure, figure.axes[0].xaxis)
    assert len(boxes) == 4
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, (left, right)
    plots.plt.close(figure)


def test_training_curves_tick_whole_epochs():
    from meid_bench.report import plots

    log = [{"epoch": e, "loss_classification": 1.0 / (e + 1), "val_mAP": 0.2 + 0.1 * e} for e in range(2)]
    figure = plots.training_curves(["late_avg"], [log], "curves")
    for axes in figure.axes:
        figure.canvas.draw()
        low, high = axes.get_xlim()
        ticks = [t for t in axes.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plots.plt.close(figure)


def test_a_split_from_other_annotations_is_not_called_by_the_benchmarks_name(tmp_path):
    # The demo builds a CharadesLT-style split from synthetic annotations: its sources are not the files the
    # shipped CharadesLT reference names, so the page and every figure say so, not just "charadeslt".
    from meid_bench.build.protocol import BuildOptions, build_and_write
    from meid_bench.build.synthetic import write_synthetic_charades

    annotations = write_synthetic_charades(tmp_path / "ann", num_classes=6, train_videos=120, test_videos=40)
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=5.0, val_per_class=3), annotations,
                                tmp_path / "charadeslt-demo")
    split = load_split(split_dir)
    ids = split.test["video_id"].tolist()
    scores = np.random.default_rng(0).random((len(ids), split.num_classes)).astype(np.float32)
    run = make_run(tmp_path / "runs" / "meid", split_dir, split.checksum, ids, scores, method="meid",
                   simulated=True)
    out = write_report([run], tmp_path / "report")
    page = (out / "index.html").read_text()
    title = "charadeslt-demo (charadeslt protocol, other annotations)"
    assert f"<h2>{title}</h2>" in page and "<h2>charadeslt</h2>" not in page
    verdict = page[page.index('<p class="verdict">'):]
    verdict = verdict[:verdict.index("</p>")]
    assert verdict.count('<strong class="badge">SIMULATED</strong>') == 2  # features and annotations
    assert "annotations that are not the benchmark&#x27;s official files" in verdict
    folder = next(p for p in out.iterdir() if p.is_dir())
    for svg in folder.glob("*.svg"):  # titles wrap, so the words may sit on two lines
        text = svg.read_text()
        assert "SIMULATED" in text and "edited annotations" in text.replace("\n", " "), svg.name
