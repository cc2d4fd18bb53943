"""The report's tables as data (pandas frames), CSV and Markdown. Every metric is in percent (``*_pct``) and every
difference in percentage points (``*_pp``), as in the figures."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from meid_bench._version import __version__
from meid_bench.build.split_io import GROUPS
from meid_bench.records import shown_epoch
from meid_bench.report.paired import PAIRED_METRICS
from meid_bench.report.sections import SplitSection, verdict

METRICS = ("mAP", "mAP_head", "mAP_medium", "mAP_tail", "top1", "top5")
GROUP_METRICS = ("mAP", "mAP_head", "mAP_medium", "mAP_tail")
RESULT_COLUMNS = (("benchmark", "split_checksum", "features", "run", "method", "seed")
                  + tuple(f"{m}_pct" for m in METRICS)
                  + ("val_mAP_pct", "best_epoch", "classes_evaluated", "classes_without_positives")
                  + tuple(f"{g}_classes" for g in GROUPS) + ("score_scale",))
PROTOCOL_NOTE = ("Test-set metrics in percent, computed as docs/evaluation.md states: average precision as "
                 "scikit-learn computes it (tied scores are one threshold); classes without a positive test video "
                 "are left out of every mean and counted; videos without labels are negatives for every class. "
                 "Methods are chosen on validation only.")


PAIRED_NOTE = ("Method minus reference on the same seed, then the mean over the seeds. The bold row gives the 95% "
               "interval with both sources of noise, the seeds and the test set (a paired bootstrap over test "
               "videos), and the verdict: different (the interval's test rejects no difference), equivalent (two "
               "one-sided tests put the difference inside the margin), or inconclusive (neither). Verdicts are "
               "Holm-adjusted over every method and metric of the table. The row below it is the seed-only t-interval. "
               "A method with one shared seed has no interval.")


def _pct(value: object) -> float | None:
    return None if value is None else 100.0 * float(value)


def results_frame(sections: Sequence[SplitSection]) -> pd.DataFrame:
    """One row per run: split identity, features kind, run identity, test metrics (%) and validation mAP (%)."""
    rows = []
    for section in sections:
        sizes = section.group_sizes
        for run, result, val in zip(section.runs, section.metrics, section.val_metrics):
            row = {"benchmark": section.split.name, "split_checksum": section.split.checksum,
                   "features": run.features_kind, "run": run.name, "method": run.method, "seed": run.seed}
            row |= {f"{m}_pct": _pct(result.get(m)) for m in METRICS}
            row["val_mAP_pct"] = None if val is None else _pct(val.get("mAP"))
            row["best_epoch"] = shown_epoch(result.get("best_epoch"))
            row["classes_evaluated"] = result.get("classes_evaluated")
            row["classes_without_positives"] = result.get("classes_without_positives")
            row |= {f"{g}_classes": sizes[g] for g in GROUPS}
            row["score_scale"] = result.get("score_scale")
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for column in ("seed", "best_epoch", "classes_evaluated", "classes_without_positives"):
        frame[column] = frame[column].astype("Int64")
    return frame


def method_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, method): the runs, their seeds, and the mean and sample standard deviation of each
    metric over them (std empty for a single run)."""
    keys = ["benchmark", "split_checksum", "features", "method"]
    frame = frame.assign(features=frame.groupby(["split_checksum", "method"])["features"].transform(
        lambda kinds: kinds.iloc[0] if kinds.nunique() == 1 else "mixed"))
    grouped = frame.groupby(keys, sort=False)
    summary = grouped.size().rename("runs").reset_index()
    summary["seeds"] = grouped["seed"].agg(lambda s: " ".join(str(int(v)) for v in s.dropna())).to_numpy()
    for column in [f"{m}_pct" for m in METRICS] + ["val_mAP_pct"]:
        numbers = frame[column].astype(float)
        summary[f"{column}_mean"] = numbers.groupby([frame[k] for k in keys], sort=False).mean().to_numpy()
        summary[f"{column}_std"] = numbers.groupby([frame[k] for k in keys], sort=False).std(ddof=1).to_numpy()
    return summary


def has_repeats(frame: pd.DataFrame) -> bool:
    return bool(frame.groupby(["split_checksum", "method"]).size().max() > 1) if len(frame) else False


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


# -- text formatting shared by Markdown and HTML -----------------------------------------------------------------

def percent(value: object, digits: int = 2) -> str:
    """A value already in percent (or percentage points), or n/a."""
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def signed(value: object, digits: int = 2) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):+.{digits}f}".replace("-", "−")


def mean_std(mean: object, std: object) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    return percent(mean) if std is None or pd.isna(std) else f"{percent(mean)} ± {percent(std)}"


def combined(row: pd.Series, metric: str) -> str:
    """``+1.23 [−0.40, +2.86] inconclusive``: the mean difference, its interval with seed and test-set noise and
    the adjusted verdict."""
    return _difference(row, metric, "combined", row[f"{metric}_diff_pp_verdict"])


def _difference(row: pd.Series, metric: str, interval_kind: str, verdict: object = None) -> str:
    """A paired mean difference with the interval ``<metric>_diff_pp_<interval_kind>_{low,high}`` (and a verdict),
    or the note why it has none."""
    mean = row[f"{metric}_diff_pp_mean"]
    if mean is None or pd.isna(mean):
        return "n/a"
    low, high = row[f"{metric}_diff_pp_{interval_kind}_low"], row[f"{metric}_diff_pp_{interval_kind}_high"]
    if low is None or pd.isna(low):
        return f"{signed(mean)} (1 seed: no interval)"
    return f"{signed(mean)} [{signed(low)}, {signed(high)}]" + (f" {verdict}" if verdict is not None else "")


def paired_caption(group: pd.DataFrame, reference: str) -> str:
    """What one reference's table adjusted for and which margins it used."""
    margins = ", ".join(f"{metric.replace('mAP_', '')} ±{float(group[f'{metric}_diff_pp_margin'].iloc[0]):g}"
                        for metric in PAIRED_METRICS)
    size = int(group["family_size"].max()) if len(group) else 0
    tested = ("test-set noise from a paired bootstrap over test videos" if group[
        [f"{m}_diff_pp_se_test" for m in PAIRED_METRICS]].notna().any().any() else "seed noise only (no bootstrap)")
    return (f"Reference {reference}: verdicts Holm-adjusted over the {size} differences of this table at 5%; "
            f"equivalence margins in pp: {margins}; intervals with {tested}.")


def paired_console_lines(summary: pd.DataFrame) -> list[str]:
    """The paired differences as ``meid-bench report`` prints them: per split and reference, one line per method
    and metric with the combined interval, the adjusted verdict and the margin."""
    lines: list[str] = []
    for (benchmark, checksum, reference), group in summary.groupby(["benchmark", "split_checksum", "reference"],
                                                                   sort=False):
        lines.append(f"{benchmark} ({str(checksum)[:12]}), method − {reference}, pp: {paired_caption(group, reference)}")
        width = max(len(str(m)) for m in group["method"])
        for _, row in group.iterrows():
            for metric in PAIRED_METRICS:
                margin = row[f"{metric}_diff_pp_margin"]
                lines.append(f"  {str(row['method']):<{width}}  {metric:<10}  {combined(row, metric)}"
                             f"  (margin ±{float(margin):g}, {int(row['seeds'])} seeds)")
    return lines


def interval(row: pd.Series, metric: str) -> str:
    """``+1.23 [−0.40, +2.86]``: a paired mean difference with its seed-only 95% interval (or the note why none)."""
    return _difference(row, metric, "ci95")


def metric_headers(section: SplitSection, unit: str = "%") -> list[str]:
    """Column headers of the four group metrics with the classes in each group: ``mAP % (157 classes)``."""
    sizes = section.group_sizes
    labels = {"mAP": ("mAP", "all"), "mAP_head": ("head", "head"), "mAP_medium": ("medium", "medium"),
              "mAP_tail": ("tail", "tail")}
    return [f"{labels[m][0]} {unit} ({sizes[labels[m][1]]} classes)" for m in GROUP_METRICS]


# -- table rows as text, shared by Markdown and HTML (each escapes and emphasises its own way) -----------------------

SUMMARY_NOTE = ("Test mAP in %, mean ± standard deviation over seeds. Validation mAP (val) chose each run's best "
                "epoch and the best method above; the test set chose nothing.")


def summary_rows(summary: pd.DataFrame) -> list[list[str]]:
    """One row per method: method, runs, seeds, the four group mAPs and validation mAP as ``mean ± std``."""
    return [[str(r["method"]), str(int(r["runs"])), str(r["seeds"])]
            + [mean_std(r[f"{m}_pct_mean"], r[f"{m}_pct_std"]) for m in GROUP_METRICS]
            + [mean_std(r["val_mAP_pct_mean"], r["val_mAP_pct_std"])] for _, r in summary.iterrows()]


def summary_headers(section: SplitSection) -> list[str]:
    return ["method", "runs", "seeds", *metric_headers(section), "val mAP %"]


def run_rows(frame: pd.DataFrame) -> list[list[str]]:
    """One row per run: run, method, seed, every metric (%), validation mAP (%), classes evaluated."""
    rows = []
    for _, row in frame.iterrows():
        cells = [str(row["run"]), str(row["method"]), "" if pd.isna(row["seed"]) else str(row["seed"])]
        cells += [percent(row[f"{m}_pct"]) for m in METRICS] + [percent(row["val_mAP_pct"])]
        total = int(row["classes_evaluated"]) + int(row["classes_without_positives"])
        cells.append(f"{int(row['classes_evaluated'])} of {total}")
        rows.append(cells)
    return rows


def run_headers(section: SplitSection) -> list[str]:
    return ["run", "method", "seed", *metric_headers(section), "top-1 %", "top-5 %", "val mAP %",
            "classes evaluated"]


def paired_tables(section: SplitSection, summary: pd.DataFrame,
                  by_seed: pd.DataFrame) -> list[tuple[str, str, list[tuple[bool, list[str]]]]]:
    """Per reference method of the split: its caption and rows, ``(is_mean_row, cells)``; each method's seeds
    (method, seed, the four differences) and then, for two seeds or more, its mean with the combined 95% interval
    and verdict, and the seed-only interval."""
    mine = summary[summary["split_checksum"] == section.split.checksum]
    seeds = by_seed[by_seed["split_checksum"] == section.split.checksum]
    tables = []
    for reference, group in mine.groupby("reference", sort=False):
        rows: list[tuple[bool, list[str]]] = []
        for _, row in group.iterrows():
            pairs = seeds[(seeds["method"] == row["method"]) & (seeds["reference"] == reference)]
            rows += [(False, [str(row["method"]), str(pair["seed"])]
                      + [signed(pair[f"{m}_diff_pp"]) for m in PAIRED_METRICS]) for _, pair in pairs.iterrows()]
            if int(row["seeds"]) > 1:
                rows.append((True, [str(row["method"]), "mean [95% CI] verdict"]
                             + [combined(row, m) for m in PAIRED_METRICS]))
                rows.append((False, [str(row["method"]), "seeds only [95% CI]"]
                             + [interval(row, m) for m in PAIRED_METRICS]))
        tables.append((str(reference), paired_caption(group, str(reference)), rows))
    return tables


def paired_headers(section: SplitSection, reference: str) -> list[str]:
    return [f"method − {reference}", "seed", *metric_headers(section, "pp")]


# -- Markdown -----------------------------------------------------------------------------------------------------

def _md(text: object) -> str:
    return str(text).replace("|", "\\|")


def _md_table(headers: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    align = ["---"] * numeric_from + ["---:"] * (len(headers) - numeric_from)
    return (["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows] + [""])


def results_markdown(sections: Sequence[SplitSection], frame: pd.DataFrame, paired_summary: pd.DataFrame,
                     paired_by_seed: pd.DataFrame) -> str:
    """The whole results.md: the verdict per split, then per split the results, paired differences and runs."""
    lines = ["# Results", ""]
    lines += [f"- {verdict(section).text()}" for section in sections]
    lines += ["", f"{PROTOCOL_NOTE} Written by meid-bench {__version__}.", ""]
    for section in sections:
        part = frame[frame["split_checksum"] == section.split.checksum]
        repeats = has_repeats(part)
        lines += [f"## {section.title}", ""]
        if repeats:
            lines += [SUMMARY_NOTE, ""] + _md_table(summary_headers(section), summary_rows(method_summary(part)), 3)
        runs = ["### Runs" if repeats else "Test metrics in %, one row per run:", ""]
        runs += _md_table(run_headers(section), run_rows(part), 3)
        paired = _paired_markdown(section, paired_summary, paired_by_seed)
        # With seeds: the summary, the differences, every run. Without: the runs are the results table.
        lines += paired + runs if repeats else runs + paired
        lines += [f"Split `{section.split.path}`, checksum `{section.split.checksum}`.", ""]
    return "\n".join(lines)


def _paired_markdown(section: SplitSection, summary: pd.DataFrame, by_seed: pd.DataFrame) -> list[str]:
    tables = paired_tables(section, summary, by_seed)
    if not tables:
        return []
    lines = ["### Paired differences (test, percentage points)", "", PAIRED_NOTE, ""]
    for reference, caption, rows in tables:
        cells = [[f"**{c}**" if mean and i < 2 else c for i, c in enumerate(row)] for mean, row in rows]
        lines += [f"Reference: **{_md(reference)}**. {_md(caption)}", ""]
        lines += _md_table(paired_headers(section, reference), cells, 2)
    return lines
