"""The whole report for a set of runs, as ``meid-bench report`` writes it.

Output folder::

    index.html                       one self-contained page: verdicts, results, paired differences, figures,
                                     split facts, recipes
    results.md, results.csv          the verdict per split, then one row per run (metrics in percent)
    results_by_method.csv            where a method has several runs: mean and standard deviation over seeds
    paired_differences.csv           where methods share seeds: method minus reference, mean, the seed-only and the
                                     combined (seeds and test videos) 95% intervals, Holm-adjusted verdicts
    paired_differences_by_seed.csv   the same differences, seed by seed
    <benchmark>-<checksum8>/         per split: map_bars, training_curves, ap_vs_train_count, class_counts,
                                     class_share, each as .png (200 dpi), .svg (text editable) and .pdf

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

from meid_bench.build.split_io import GROUPS
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import publish_folder, write_json_atomic, write_text_atomic
from meid_bench.outputs import REPORT_FORMAT, REPORT_MARKER, Output, check_outputs, run_input
from meid_bench.report import plots
from meid_bench.report.page import html_page
from meid_bench.evaluator import Evaluator, read_predictions
from meid_bench.report.inference import DEFAULT_BOOTSTRAP, replicate_metrics
from meid_bench.report.paired import DEFAULT_REFERENCES, paired_differences
from meid_bench.runs import Run
from meid_bench.report.sections import SplitSection, collect_sections
from meid_bench.report.tables import has_repeats, method_summary, results_frame, results_markdown, to_csv


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, force: bool = False,
                 references: Sequence[str] | None = None, bootstrap: int = DEFAULT_BOOTSTRAP) -> Path:
    """Write the report of ``run_dirs`` into the folder ``out``; returns it.

    ``references``: the methods others are compared with, seed by seed (default :data:`DEFAULT_REFERENCES`,
    those of them present; a reference given explicitly must be among the runs). ``bootstrap``: draws of the test
    videos for the test-set part of the paired intervals (0: the seed part only).
    """
    from meid_bench.run_lock import refuse_if_locked

    if bootstrap < 0:
        raise MeidBenchError(f"--bootstrap {bootstrap}: must be >= 0 (0: intervals from the seeds alone)")
    # The output rule (outputs.py): never inside or over a run it reads; --force replaces only a report folder.
    check_outputs([Output(Path(out), "--out", "report", folder=True)], [run_input(r, "run") for r in run_dirs],
                  force)
    out = Path(out)
    for run_dir in run_dirs:  # a run being trained has no final numbers yet
        refuse_if_locked(run_dir, "report it")
    sections = collect_sections(run_dirs)
    frame = results_frame(sections)
    if references is None:
        references = DEFAULT_REFERENCES
    else:
        missing = [r for r in references if r not in set(frame["method"])]
        if missing:
            raise MeidBenchError(f"--reference {','.join(references)}: {', '.join(missing)} is not a method of "
                                 f"these runs (methods: {', '.join(dict.fromkeys(frame['method']))})")
    replicates = _TestReplicates(sections, bootstrap) if bootstrap else None
    by_seed, summary = paired_differences(frame, references, replicates)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for section in sections:
            _write_figures(section, staging / section.slug)
        write_text_atomic(staging / "results.csv", to_csv(frame))
        if has_repeats(frame):
            write_text_atomic(staging / "results_by_method.csv", to_csv(method_summary(frame)))
        if len(summary):
            write_text_atomic(staging / "paired_differences.csv", to_csv(summary))
            write_text_atomic(staging / "paired_differences_by_seed.csv", to_csv(by_seed))
        write_text_atomic(staging / "results.md", results_markdown(sections, frame, summary, by_seed))
        write_text_atomic(staging / "index.html", html_page(sections, summary, by_seed))
        # The marker by which a later `report --force` knows this folder as a report (and nothing else).
        write_json_atomic(staging / REPORT_MARKER, {"format": REPORT_FORMAT, "format_version": 1,
                                                   "runs": [str(r) for r in run_dirs]})
        publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


class _TestReplicates:
    """A run's [bootstrap, 4] test metrics (percent) on its split's bootstrap draws of test videos, computed the
    first time a paired difference asks for that run (only runs of differences with an interval are re-scored)."""

    def __init__(self, sections: Sequence[SplitSection], bootstrap: int) -> None:
        self.bootstrap = bootstrap
        self.runs = {(s.split.checksum, run.method, run.seed): (s, run) for s in sections for run in s.runs}
        self.done: dict[tuple[str, str, int], np.ndarray] = {}
        self.evaluators: dict[str, Evaluator] = {}  # one per split: its test targets are read once

    def __call__(self, checksum: str, method: str, seed: int) -> np.ndarray:
        key = (checksum, method, seed)
        if key not in self.done:
            section, run = self.runs[key]
            if checksum not in self.evaluators:
                self.evaluators[checksum] = Evaluator(section.split, "test")
            evaluator = self.evaluators[checksum]
            path = run.predictions_path("test")
            ids, scores = read_predictions(path, evaluator.class_keys)
            aligned = evaluator.checked_scores(ids, scores, str(path))
            self.done[key] = replicate_metrics(aligned, evaluator.targets, section.split.groups, self.bootstrap)
        return self.done[key]


def by_method(section: SplitSection) -> tuple[list[str], list[dict], list[dict]]:
    """Runs of one method (several seeds) folded into one entry: the mean of each metric and of each class's AP,
    and the sample standard deviation of the group mAPs (for error bars)."""
    order = section.methods()
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
    # Every figure says what is not real, in its title (so also in its PDF and SVG), not only the page.
    annotations = ", SIMULATED or edited annotations" if section.annotations == "other" else ""
    features = {"simulated": ", SIMULATED features", "mixed": ", SIMULATED and real features"}.get(
        section.features, "") + annotations
    if len(section.methods()) < len(section.runs):  # seeds: one entry per method
        names, metrics, spreads = by_method(section)
        what = "per method, mean over seeds with the standard deviation as error bars"
    else:
        names, metrics, spreads = _display_names(section.runs), section.metrics, None
        what = "per run"
    figures = [
        ("map_bars", f"Test mAP (%), overall and per class group (classes in each group below its name), {what}: "
                     f"{title}{features}",
         plots.map_bars(names, metrics, f"Test mAP by class group\n{title}{features}", errors=spreads,
                        group_sizes=section.group_sizes)),
    ]
    logged = [(run.method, log) for run, log in zip(section.runs, section.logs) if log]
    if logged:
        figures.append(("training_curves", f"Training loss and validation mAP (%) per epoch, one line per run, "
                                           f"coloured by method, from each run's log.jsonl: {title}{features}",
                        plots.training_curves([m for m, _ in logged], [log for _, log in logged],
                                              f"Training curves\n{title}{features}")))
    figures += [
        ("ap_vs_train_count", f"Per-class test AP (%) against training videos per class (log scale), dashed lines "
                              f"at the group boundaries, {what.split(' with')[0]}: {title}{features}",
         plots.ap_vs_train_count(section.split, names, metrics,
                                 f"Per-class AP vs training count\n{title}{features}")),
        ("class_counts", f"Training videos per class, achieved against the target profile, groups shaded: "
                         f"{title}{annotations}",
         plots.class_counts(section.split, f"Class-count distribution\n{title}{annotations}")),
        ("class_share", f"Video-level against frame-level (annotated seconds) share of each class, in %: "
                        f"{title}{annotations}",
         plots.class_share(section.split, f"Video-level vs frame-level class share\n{title}{annotations}")),
    ]
    for stem, caption, figure in figures:
        png = plots.save_figure(figure, folder / stem)[0]
        section.figures.append((caption, png))


def _display_names(runs: list[Run]) -> list[str]:
    """Run names, made unique with their folder where two runs of a split share a name."""
    names = [run.name for run in runs]
    return [str(run.path) if names.count(run.name) > 1 else run.name for run in runs]
