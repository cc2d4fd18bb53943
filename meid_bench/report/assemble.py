"""The whole report for a set of runs, as ``meid-bench report`` writes it.

Output folder::

    index.html                 self-contained page: every figure embedded, manifest facts, results, recipes
    results.md, results.csv    one row per run
    <benchmark>-<checksum8>/   per split: map_bars, ap_vs_train_count, class_counts, class_share (.png and .svg)

Runs are grouped by split checksum, so no figure or table mixes splits. The folder is written under a temporary
name and renamed into place; an existing report is replaced only with ``force``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from meid_bench.build.split_io import GROUPS, Split
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import check_output_folder, publish_folder, write_text_atomic
from meid_bench.report import plots
from meid_bench.report.page import (
    SplitSection,
    has_repeats,
    html_page,
    method_summary,
    results_csv,
    results_frame,
    results_markdown,
)
from meid_bench.report.runs import Run, load_run_split, read_run, run_test_metrics


def collect_sections(run_dirs: Sequence[str | os.PathLike]) -> list[SplitSection]:
    """Read each run, load and check its split, get its test metrics; group by split in first-seen order."""
    cache: dict[Path, Split] = {}
    sections: dict[str, SplitSection] = {}
    seen: set[Path] = set()
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        run = read_run(run_dir)
        split = load_run_split(run, cache=cache)
        metrics = run_test_metrics(run, split)
        section = sections.get(split.checksum)
        if section is None:
            slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{split.name}-{split.checksum[:8]}")
            section = sections[split.checksum] = SplitSection(split=split, slug=slug, runs=[], metrics=[])
        section.runs.append(run)
        section.metrics.append(metrics)
    if not sections:
        raise MeidBenchError("report: no runs given; pass RUN_DIR arguments or train a run under runs/")
    return list(sections.values())


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, force: bool = False) -> Path:
    """Write the report of ``run_dirs`` into the folder ``out``; returns it."""
    out = check_output_folder(out, force)
    sections = collect_sections(run_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for section in sections:
            _write_figures(section, staging / section.slug)
        frame = results_frame(sections)
        write_text_atomic(staging / "results.csv", results_csv(frame))
        if has_repeats(frame):
            write_text_atomic(staging / "results_by_method.csv", results_csv(method_summary(frame)))
        write_text_atomic(staging / "results.md", results_markdown(sections, frame))
        write_text_atomic(staging / "index.html", html_page(sections))
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def by_method(section: SplitSection) -> tuple[list[str], list[dict], list[dict]]:
    """Runs of one method (several seeds) folded into one entry: the mean of each metric and of each class's AP,
    and the sample standard deviation of the group mAPs (for error bars)."""
    order = list(dict.fromkeys(run.method for run in section.runs))
    means, spreads = [], []
    for method in order:
        results = [m for run, m in zip(section.runs, section.metrics) if run.method == method]
        mean, spread = {}, {}
        for key in ("mAP",) + tuple(f"mAP_{g}" for g in GROUPS):
            values = np.array([np.nan if r.get(key) is None else r[key] for r in results], dtype=np.float64)
            mean[key] = None if np.isnan(values).all() else float(np.nanmean(values))
            spread[key] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else None
        per_class = np.array([[np.nan if v is None else v for v in r["per_class_ap"]] for r in results])
        with np.errstate(invalid="ignore"):
            class_mean = np.nanmean(per_class, axis=0) if np.isfinite(per_class).any() else per_class[0]
        mean["per_class_ap"] = [None if np.isnan(v) else float(v) for v in class_mean]
        means.append(mean)
        spreads.append(spread)
    counts = [sum(run.method == m for run in section.runs) for m in order]
    return [f"{m} (n={n})" for m, n in zip(order, counts)], means, spreads


def _write_figures(section: SplitSection, folder: Path) -> None:
    folder.mkdir(parents=True)
    title = section.title
    if len({run.method for run in section.runs}) < len(section.runs):  # seeds: one entry per method
        names, metrics, spreads = by_method(section)
        what = "per method, mean over seeds with the standard deviation as error bars"
    else:
        names, metrics, spreads = _display_names(section.runs), section.metrics, None
        what = "per run"
    figures = [
        ("map_bars", f"Overall, head, medium and tail mAP {what}: {title}",
         plots.map_bars(names, metrics, f"mAP by class group\n{title}", errors=spreads)),
        ("ap_vs_train_count", f"Per-class test AP against training videos per class (log scale), dashed lines at "
                              f"the group boundaries, {what.split(' with')[0]}: {title}",
         plots.ap_vs_train_count(section.split, names, metrics, f"Per-class AP vs training count\n{title}")),
        ("class_counts", f"Training videos per class, achieved against the target profile, groups shaded: {title}",
         plots.class_counts(section.split, f"Class-count distribution\n{title}")),
        ("class_share", f"Video-level against frame-level (annotated seconds) share of each class: {title}",
         plots.class_share(section.split, f"Video-level vs frame-level class share\n{title}")),
    ]
    for stem, caption, figure in figures:
        png, _svg = plots.save_figure(figure, folder / stem)
        section.figures.append((caption, png))


def _display_names(runs: list[Run]) -> list[str]:
    """Run names, made unique with their folder where two runs of a split share a name."""
    names = [run.name for run in runs]
    return [str(run.path) if names.count(run.name) > 1 else run.name for run in runs]
