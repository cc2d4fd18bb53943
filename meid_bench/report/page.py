"""The report as one self-contained HTML page: styles inline, figures embedded as base64 PNG, no scripts, no
external links; readable from a 400 px phone screen to a desktop.

Order, as a reader needs it: a verdict line per split (benchmark, real or SIMULATED features, runs, best method by
validation); then per split the results in percent with the group sizes in the headers, the paired differences
between methods, the figures; last the split's facts (formatted, the manifest folded) and the runs' recipes.
"""

from __future__ import annotations

import base64
import html
import json
import re

import pandas as pd

from meid_bench._version import __version__
from meid_bench.build.split_io import Split
from meid_bench.report.plots import PNG_DPI
from meid_bench.report.sections import SplitSection, verdict
from meid_bench.report.tables import (
    PAIRED_NOTE,
    PROTOCOL_NOTE,
    SUMMARY_NOTE,
    has_repeats,
    method_summary,
    paired_headers,
    paired_tables,
    results_frame,
    run_headers,
    run_rows,
    summary_headers,
    summary_rows,
)


# 10-point figure text is 13.9 CSS pixels at full size; at 0.6 of it, 8.3 px, the least that stays readable.
MIN_FIGURE_SCALE = 0.6


def html_page(sections: list[SplitSection], paired_summary: pd.DataFrame, paired_by_seed: pd.DataFrame) -> str:
    """The whole report as one HTML document (figures embedded)."""
    verdicts = "".join(f'<li><a href="#{_anchor(i)}"><b>{_e(s.title)}</b></a>: {_verdict_html(s)}</li>'
                       for i, s in enumerate(sections))
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>meid-bench report</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        "<h1>meid-bench report</h1>",
        f'<ul class="verdicts">{verdicts}</ul>',
        f'<p class="note">{_e(PROTOCOL_NOTE)} Written by meid-bench {_e(__version__)}.</p>',
    ]
    for index, section in enumerate(sections):
        parts += _section_html(index, section, paired_summary, paired_by_seed)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _verdict_html(section: SplitSection) -> str:
    v = verdict(section)
    flagged = v.features in ("simulated", "mixed") or v.annotations == "other"
    css = "simulated" if flagged else "real"
    features = _e(v.features_text)
    if flagged:  # every SIMULATED (features, annotations) carries the badge
        features = features.replace("SIMULATED", '<strong class="badge">SIMULATED</strong>')
    return f'<span class="{css}">{features}</span>; {_e(v.runs)}; {_e(v.best_text)}'


def _section_html(index: int, section: SplitSection, paired_summary: pd.DataFrame,
                  paired_by_seed: pd.DataFrame) -> list[str]:
    frame = results_frame([section])
    repeats = has_repeats(frame)
    out = [f'<section id="{_anchor(index)}">', f"<h2>{_e(section.title)}</h2>",
           f'<p class="verdict">{_verdict_html(section)}</p>', "<h3>Results on the test set, in %</h3>"]
    if repeats:
        out.append(_summary_table(section, method_summary(frame)))
    else:
        out.append(_runs_table(section, frame))
    out += _paired_html(section, paired_summary, paired_by_seed)
    if repeats:
        out.append(f"<details><summary>Every run ({len(section.runs)})</summary>{_runs_table(section, frame)}"
                   "</details>")
    if section.figures:
        out.append("<h3>Figures</h3>")
    for caption, png in section.figures:
        data = png.read_bytes()
        # Shown at the figure's size in inches x 100 CSS pixels (the PNG has twice that, sharp on dense screens),
        # never wider than the page, and never narrower than MIN_FIGURE_SCALE of that: on a phone a wide figure
        # scrolls sideways instead of shrinking its 10-point text below legibility.
        width = int.from_bytes(data[16:20], "big") * 100 // PNG_DPI
        encoded = base64.b64encode(data).decode("ascii")
        out.append(f'<figure><div class="scroll"><img alt="{_e(caption)}" width="{width}" '
                   f'style="min-width:{round(width * MIN_FIGURE_SCALE)}px" src="data:image/png;base64,{encoded}">'
                   f"</div><figcaption>{_e(caption)}</figcaption></figure>")
    out += ["<h3>The split</h3>", _facts_table(section.split)]
    out.append("<h3>Runs and their recipes</h3>")
    for run in section.runs:
        recipe = json.dumps(run.recipe, indent=2, sort_keys=True, default=str)
        seed = "" if run.seed is None else f", seed {run.seed}"
        out.append(f"<details><summary><b>{_e(run.name)}</b>: {_e(run.method)}{seed}, {_e(run.features_kind)} "
                   f"features</summary><pre>{_e(recipe)}</pre></details>")
    out.append("</section>")
    return out


def _table(headers: list[str], rows: list[list[str]], numeric_from: int, css: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _headers(headers: list[str]) -> list[str]:
    """Header cells, escaped; a group size goes on a second line: ``head %<br><small>(77 classes)</small>``."""
    return [re.sub(r" \((\d+ classes)\)$", r"<br><small>(\1)</small>", _e(h)) for h in headers]


def _summary_table(section: SplitSection, summary: pd.DataFrame) -> str:
    rows = [[_e(c) for c in row] for row in summary_rows(summary)]
    return f"<p>{_e(SUMMARY_NOTE)}</p>" + _table(_headers(summary_headers(section)), rows, 1, "results")


def _runs_table(section: SplitSection, frame: pd.DataFrame) -> str:
    rows = [[_e(c) for c in row] for row in run_rows(frame)]
    return _table(_headers(run_headers(section)), rows, 2, "results")


def _paired_html(section: SplitSection, summary: pd.DataFrame, by_seed: pd.DataFrame) -> list[str]:
    tables = paired_tables(section, summary, by_seed)
    if not tables:
        return []
    out = ["<h3>Paired differences, in percentage points</h3>", f'<p class="note">{_e(PAIRED_NOTE)}</p>']
    for reference, caption, rows in tables:
        cells = [[f'<b{" class=nowrap" if i == 1 else ""}>{_e(c)}</b>' if mean else _e(c) for i, c in enumerate(row)]
                 for mean, row in rows]
        out.append(f'<p class="note">{_e(caption)}</p>')
        out.append(_table(_headers(paired_headers(section, reference)), cells, 2, "results"))
    return out


# -- the split's facts ----------------------------------------------------------------------------------------------

def _facts_table(split: Split) -> str:
    manifest = split.manifest
    parameters = dict(manifest.get("parameters", {}))
    fidelity = manifest.get("fidelity", {})
    groups = manifest.get("groups", {})
    sizes = {g: int((split.classes["group"] == g).sum()) for g in ("head", "medium", "tail")}
    rows: list[tuple[str, str]] = [("benchmark", split.name), ("protocol", str(manifest.get("protocol", "")))]
    if parameters.get("target_scale", "") is None:
        chosen = fidelity.get("target_scale")
        parameters["target_scale"] = "auto" + (f" (chose {_value(chosen)})" if chosen is not None else "")
    rows += [(f"parameter {key}", _value(value)) for key, value in parameters.items() if key != "benchmark"]
    rows.append(("videos", " · ".join(f"{subset} {_value(len(split.table(subset)))}"
                                      for subset in ("train", "val", "test"))))
    rule = ""
    if "head_above" in groups and "tail_below" in groups:
        rule = (f" (head: more than {_value(groups['head_above'])} training videos, tail: fewer than "
                f"{_value(groups['tail_below'])})")
    rows.append(("classes", f"{split.num_classes}: head {sizes['head']}, medium {sizes['medium']}, tail "
                            f"{sizes['tail']}{rule}"))
    if "requested_imbalance" in fidelity:
        rows.append(("imbalance factor", f"requested {_value(fidelity['requested_imbalance'])}, achieved "
                                         f"{_value(fidelity.get('achieved_imbalance'))}"))
        rows.append(("fidelity to the targets", f"|log(achieved / target)| median "
                     f"{_value(fidelity.get('abs_log_ratio_median'))}, 90th percentile "
                     f"{_value(fidelity.get('abs_log_ratio_p90'))}; bounds "
                     f"{'met' if fidelity.get('bounds_met') else 'NOT met'}"))
    elif "train_videos_max_over_min" in fidelity:
        rows.append(("imbalance (largest / smallest class)", _value(fidelity["train_videos_max_over_min"])))
    frame_level = manifest.get("frame_level", {})
    if frame_level.get("train_seconds_max_over_min") is not None:
        rows.append(("frame-level imbalance (annotated seconds)", _value(frame_level["train_seconds_max_over_min"])))
    for source in manifest.get("sources", []):
        name = source.get("file", source.get("name", "?"))
        rows.append((f"source {name}", f"sha256 {source.get('sha256', '')}"))
    rows.append(("split checksum (content identity: the benchmark and the tables' content hashes)", split.checksum))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    manifest_text = json.dumps(manifest, indent=2, sort_keys=False, default=str)
    return (f'<div class="scroll"><table class="facts">{body}</table></div>'
            f"<details><summary>manifest.json, every field</summary><pre>{_e(manifest_text)}</pre></details>")


def _value(value: object) -> str:
    """A manifest value for people: thousands separated, floats to 4 significant digits, none for null."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) < 1e15 else f"{value:,.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _e(text: object) -> str:
    return html.escape(str(text))


def _anchor(index: int) -> str:
    return f"split-{index + 1}"


_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:1.5em auto;"
    "padding:0 1em;color:#222;line-height:1.45}"
    "h1{font-size:1.6em;margin:0.2em 0 0.4em}h2{margin-top:0.6em}h3{margin:1.4em 0 0.4em}"
    "ul.verdicts{padding-left:1.2em}ul.verdicts li{margin:0.3em 0}"
    ".badge{background:#D55E00;color:#fff;padding:0 0.35em;border-radius:3px;font-weight:700;"
    "letter-spacing:0.03em}"
    "p.verdict{background:#f3f6fa;border-left:4px solid #0072B2;padding:0.5em 0.8em}"
    ".scroll{overflow-x:auto;max-width:100%;margin:0.6em 0}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;"
    "font-size:0.9em;vertical-align:top}thead th{background:#f3f3f3}th small{font-weight:normal;color:#555}"
    "td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}"
    "table.facts th{font-weight:600;width:32%}table.facts td{overflow-wrap:anywhere}"
    "figure{margin:1.2em 0}img{max-width:100%;height:auto;border:1px solid #eee}"
    "figcaption{font-size:0.9em;color:#444}"
    "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;font-size:0.85em}"
    "details{margin:0.4em 0}summary{cursor:pointer}.nowrap{white-space:nowrap}"
    # the first column (run or method) stays in view while a wide table scrolls sideways
    "table.results tr>:first-child{position:sticky;left:0;background:#fff;box-shadow:inset -1px 0 #ccc}"
    "table.results thead tr>:first-child{background:#f3f3f3}"
    "section{border-top:2px solid #0072B2;margin-top:2em}.note{font-size:0.9em;color:#444}"
    "@media (max-width:600px){body{margin:0.6em auto;padding:0 0.6em}h1{font-size:1.35em}"
    "th,td{padding:0.2em 0.35em;font-size:0.85em}table.facts th{width:auto}}"
)
