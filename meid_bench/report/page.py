"""The report's text outputs: the results table (CSV and Markdown) and the self-contained HTML page.

The HTML page works offline: styles inline, figures embedded as base64 PNG, no scripts, no external links.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from meid_bench import __version__
from meid_bench.build.split_io import GROUPS, Split
from meid_bench.report.runs import Run

RESULT_COLUMNS = ("benchmark", "split_checksum", "run", "method", "seed", "mAP", "mAP_head", "mAP_medium",
                  "mAP_tail", "top1", "top5", "classes_evaluated", "classes_without_positives", "score_scale")
_METRIC_COLUMNS = ("mAP", "mAP_head", "mAP_medium", "mAP_tail", "top1", "top5")


@dataclass
class SplitSection:
    """One split of the report: its runs (with their test metrics) and the figures made for it."""

    split: Split
    slug: str
    runs: list[Run]
    metrics: list[dict]
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path)

    @property
    def title(self) -> str:
        return f"{self.split.name} (split {self.split.checksum[:12]})"


def results_frame(sections: list[SplitSection]) -> pd.DataFrame:
    """One row per run: split identity, run identity and its test metrics."""
    rows = []
    for section in sections:
        for run, result in zip(section.runs, section.metrics):
            row = {"benchmark": section.split.name, "split_checksum": section.split.checksum, "run": run.name,
                   "method": run.method, "seed": run.seed}
            for key in RESULT_COLUMNS[5:]:
                row[key] = result.get(key)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def method_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, method): the number of runs (seeds) and the mean and sample standard deviation of each
    metric over them (std is empty for a single run)."""
    keys = ["benchmark", "split_checksum", "method"]
    grouped = frame.groupby(keys, sort=False)
    summary = grouped.size().rename("runs").reset_index()
    for column in _METRIC_COLUMNS:
        values = grouped[column].agg(lambda v: pd.to_numeric(v, errors="coerce").astype(float).mean())
        spread = grouped[column].agg(lambda v: pd.to_numeric(v, errors="coerce").astype(float).std(ddof=1))
        summary[f"{column}_mean"] = values.to_numpy()
        summary[f"{column}_std"] = spread.to_numpy()
    return summary


def has_repeats(frame: pd.DataFrame) -> bool:
    return bool(frame.groupby(["split_checksum", "method"]).size().max() > 1) if len(frame) else False


def method_markdown(summary: pd.DataFrame, split_checksum: str) -> list[str]:
    headers = ["method", "runs", "mAP", "head", "medium", "tail"]
    lines = ["Mean ± standard deviation over seeds:", "", "| " + " | ".join(headers) + " |",
             "|---|---:|" + "|".join(["---:"] * 4) + "|"]
    for _, row in summary[summary["split_checksum"] == split_checksum].iterrows():
        cells = [_md(row["method"]), str(int(row["runs"]))]
        cells += [_mean_std(row[f"{key}_mean"], row[f"{key}_std"]) for key in _METRIC_COLUMNS[:4]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def results_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def results_markdown(sections: list[SplitSection], frame: pd.DataFrame) -> str:
    """The results, one Markdown table per split (mAP values in [0, 1], 4 decimals)."""
    lines = ["# Results", "", f"Test-set metrics, computed by meid-bench {__version__} (protocol: docs/evaluation.md).",
             "Classes without a positive test video are left out of every mean (`classes evaluated`).", ""]
    headers = ["run", "method", "seed", "mAP", "head", "medium", "tail", "top-1", "top-5", "classes evaluated"]
    for section in sections:
        lines += [f"## {section.title}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join(["---"] * 3 + ["---:"] * 7) + "|"]
        part = frame[frame["split_checksum"] == section.split.checksum]
        if has_repeats(part):
            lines[-2:-2] = method_markdown(method_summary(part), section.split.checksum)
        for _, row in part.iterrows():
            cells = [_md(row["run"]), _md(row["method"]), "" if pd.isna(row["seed"]) else str(row["seed"])]
            cells += [_number(row[key]) for key in _METRIC_COLUMNS]
            total = int(row["classes_evaluated"]) + int(row["classes_without_positives"])
            cells.append(f"{int(row['classes_evaluated'])} of {total}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def html_page(sections: list[SplitSection]) -> str:
    """The whole report as one HTML document (figures embedded)."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>meid-bench report</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        "<h1>meid-bench report</h1>",
        f"<p>Generated by meid-bench {html.escape(__version__)}. {sum(len(s.runs) for s in sections)} runs on "
        f"{len(sections)} split(s). Metrics are on the test subset, computed as docs/evaluation.md states: average "
        "precision as scikit-learn computes it (tied scores are one threshold); classes without a positive test "
        "video are left out of every mean and counted; videos without labels are negatives for every class.</p>",
        "<nav><ul>" + "".join(f'<li><a href="#{_anchor(s.slug)}">{html.escape(s.title)}</a></li>'
                              for s in sections) + "</ul></nav>",
    ]
    for section in sections:
        parts += _section_html(section)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _section_html(section: SplitSection) -> list[str]:
    split = section.split
    out = [f'<section id="{_anchor(section.slug)}">', f"<h2>{html.escape(section.title)}</h2>",
           "<h3>Split</h3>", _facts_table(split)]
    out += ["<h3>Results (test)</h3>"]
    frame = results_frame([section])
    if has_repeats(frame):
        out.append(_method_table(method_summary(frame)))
    out.append(_results_table(section))
    for caption, png in section.figures:
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        out.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
                   f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    out.append("<h3>Runs and their recipes</h3>")
    for run in section.runs:
        recipe = json.dumps(run.recipe, indent=2, sort_keys=True, default=str)
        seed = "" if run.seed is None else f", seed {run.seed}"
        out.append(f"<details><summary><b>{html.escape(run.name)}</b>: {html.escape(run.method)}{seed}</summary>"
                   f"<pre>{html.escape(recipe)}</pre></details>")
    out.append("</section>")
    return out


def _method_table(summary: pd.DataFrame) -> str:
    headers = ["method", "runs", "mAP", "head", "medium", "tail"]
    rows = ["<p>Mean ± standard deviation over seeds:</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"]
    for _, row in summary.iterrows():
        cells = [html.escape(str(row["method"])), str(int(row["runs"]))]
        cells += [_mean_std(row[f"{key}_mean"], row[f"{key}_std"]) for key in _METRIC_COLUMNS[:4]]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"


def _facts_table(split: Split) -> str:
    manifest = split.manifest
    rows = [("benchmark", split.name), ("split checksum (sha256 of manifest.json)", split.checksum),
            ("classes", str(split.num_classes))]
    for subset in ("train", "val", "test"):
        rows.append((f"{subset} videos", str(len(split.table(subset)))))
    for group, ids in split.groups.items():
        rows.append((f"{group} classes", str(len(ids))))
    # Scalars, and the scalars of objects one level down (parameters.imbalance, fidelity.achieved_if, ...), go in
    # the table; lists and deeper objects (sources, quirks) in a folded block.
    nested: dict = {}
    for key, value in manifest.items():
        if key in ("format", "files"):
            continue
        if isinstance(value, dict):
            for sub_key, sub_value in value.items():
                if isinstance(sub_value, (dict, list)):
                    nested.setdefault(key, {})[sub_key] = sub_value
                else:
                    rows.append((f"{key}.{sub_key}", _scalar(sub_value)))
        elif isinstance(value, list):
            nested[key] = value
        else:
            rows.append((key, _scalar(value)))
    for name, entry in sorted(manifest.get("files", {}).items()):
        rows.append((f"{name} sha256", str(entry.get("sha256", ""))))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    table = f'<table class="facts">{body}</table>'
    if nested:
        table += ("<details><summary>more manifest fields</summary><pre>"
                  + html.escape(json.dumps(nested, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    return table


def _results_table(section: SplitSection) -> str:
    headers = ["run", "method", "seed", "mAP", "head", "medium", "tail", "top-1", "top-5", "classes evaluated"]
    rows = []
    for run, result in zip(section.runs, section.metrics):
        cells = [html.escape(run.name), html.escape(run.method), "" if run.seed is None else str(run.seed)]
        cells += [_number(result.get(key)) for key in _METRIC_COLUMNS]
        evaluated = result.get("classes_evaluated")
        total = (evaluated or 0) + (result.get("classes_without_positives") or 0)
        cells.append(f"{evaluated} of {total}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    group_counts = ", ".join(f"{g}: {section.metrics[0].get(f'classes_evaluated_{g}')}" for g in GROUPS) \
        if section.metrics else ""
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"
    return (f'<table class="results">{head}{"".join(rows)}</table>'
            f"<p class=\"note\">Classes evaluated per group (first run): {html.escape(group_counts)}.</p>")


def _scalar(value: object) -> str:
    return "" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)


def _number(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{float(value):.4f}"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|")


def _anchor(slug: str) -> str:
    return "split-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in slug)


_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222;line-height:1.45}"
    "table{border-collapse:collapse;margin:0.6em 0}th,td{border:1px solid #ccc;padding:0.25em 0.6em;"
    "text-align:left;font-size:0.92em}table.results td{text-align:right}table.results td:nth-child(-n+2)"
    "{text-align:left}table.facts td{font-family:ui-monospace,monospace;word-break:break-all}"
    "figure{margin:1.2em 0}img{max-width:100%;height:auto;border:1px solid #eee}"
    "figcaption{font-size:0.9em;color:#444}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;font-size:0.85em}"
    "section{border-top:2px solid #0072B2;margin-top:2em}.note{font-size:0.9em;color:#444}"
)
