"""The report's figures (matplotlib, Agg backend): each function returns a Figure, :func:`save_figure` writes it.

Colours are Okabe-Ito (distinguishable with the common colour-vision deficiencies); groups always use the same
three colours, and runs beyond eight colours also get hatches. Every figure is saved three ways: PNG at 200 dpi
(the page), SVG with its text as text (editable, searchable) and PDF (for papers). Saving is deterministic: no
dates in the metadata, a fixed SVG hash salt, so the same runs give the same bytes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from meid_bench.build.split_io import GROUPS, Split  # noqa: E402
from meid_bench.records import shown_epoch  # noqa: E402

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
GROUP_COLOURS = {"head": "#0072B2", "medium": "#009E73", "tail": "#D55E00"}
HATCHES = ("", "//", "..", "xx", "\\\\", "oo")
_RC = {"svg.hashsalt": "meid-bench", "svg.fonttype": "none", "pdf.fonttype": 42, "font.size": 10,
       "axes.titlesize": 11, "figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False}
PNG_DPI = 200
FIGURE_FORMATS = ("png", "svg", "pdf")
_CREATOR = "meid-bench (matplotlib)"
_METADATA = {"png": {"Software": _CREATOR},
             "svg": {"Date": None, "Creator": _CREATOR},
             "pdf": {"CreationDate": None, "ModDate": None, "Creator": _CREATOR, "Producer": _CREATOR}}


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` (200 dpi), ``stem.svg`` (text as text) and ``stem.pdf`` (fonts embedded as TrueType,
    text selectable) and close the figure; returns the paths in that order."""
    paths = [stem.with_suffix(f".{kind}") for kind in FIGURE_FORMATS]
    with matplotlib.rc_context(_RC):
        for path, kind in zip(paths, FIGURE_FORMATS):
            figure.savefig(path, dpi=PNG_DPI if kind == "png" else "figure", metadata=_METADATA[kind])
    plt.close(figure)
    return paths


def _group_label(label: str, key: str, group_sizes: dict[str, int] | None) -> str:
    if group_sizes is None:
        return label
    group = "all" if key == "mAP" else key.removeprefix("mAP_")
    return f"{label}\n({group_sizes[group]} classes)" if group in group_sizes else label


def map_bars(run_names: Sequence[str], metrics: Sequence[dict], title: str,
             errors: Sequence[dict] | None = None, group_sizes: dict[str, int] | None = None) -> Figure:
    """Grouped bars: overall / head / medium / tail mAP, one bar per run (or method) in each group of bars;
    ``errors`` (same keys, standard deviations) draws error bars; ``group_sizes`` (``all``, ``head``, ...: classes)
    labels each group with its size."""
    keys = [(_group_label(label, key, group_sizes), key)
            for label, key in [("overall", "mAP")] + [(g, f"mAP_{g}") for g in GROUPS]]
    if len(run_names) > MAX_GROUPED_BARS:
        return _map_panels(run_names, metrics, title, keys, errors)
    with matplotlib.rc_context(_RC):
        # At least 7 inches: four group labels like "medium\n(77 classes)" need about 1.5 inches each.
        figure, axes = plt.subplots(figsize=(max(7.0, 1.6 + 0.45 * len(run_names) * len(keys)), 4.6),
                                    layout="constrained")
        width = 0.8 / max(1, len(run_names))
        for index, (name, result) in enumerate(zip(run_names, metrics)):
            values = [result.get(key) for _, key in keys]
            heights = [np.nan if v is None else 100.0 * v for v in values]
            positions = np.arange(len(keys)) - 0.4 + width * (index + 0.5)
            spread = None
            if errors is not None:
                spread = [np.nan if errors[index].get(key) is None else 100.0 * errors[index][key] for _, key in keys]
            bars = axes.bar(positions, heights, width, label=name, color=OKABE_ITO[index % len(OKABE_ITO)],
                            yerr=spread, error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#222222"},
                            hatch=HATCHES[(index // len(OKABE_ITO)) % len(HATCHES)], edgecolor="#333333",
                            linewidth=0.5)
            if len(run_names) <= 6:
                axes.bar_label(bars, labels=["n/a" if v is None else f"{100 * v:.1f}" for v in values],
                               fontsize=7, padding=1)
        axes.set_xticks(np.arange(len(keys)), [label for label, _ in keys])
        axes.set_ylabel("mean average precision (%)")
        axes.set_ylim(0, 105)
        axes.set_title(wrap_title(title))
        # Below the axes, not beside them: long run names beside would squeeze the axes until the group labels
        # collide.
        figure.legend(title="run", fontsize=8, title_fontsize=8, loc="outside lower center",
                      ncols=min(3, len(run_names)), frameon=False)
    return figure


def wrap_title(title: str, width: int = 64) -> str:
    """Each line of ``title`` wrapped at ``width`` characters, so a long split name never runs off the figure."""
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


MAX_GROUPED_BARS = 6  # more runs than this: one panel per class group, a horizontal bar per run


def _map_panels(run_names: Sequence[str], metrics: Sequence[dict], title: str, keys: list[tuple[str, str]],
                errors: Sequence[dict] | None) -> Figure:
    """Many runs: a 2 x 2 grid of panels (overall, head, medium, tail), one horizontal bar per run in each, the
    runs in the same order everywhere so a row can be followed across panels."""
    positions = np.arange(len(run_names))[::-1]
    with matplotlib.rc_context(_RC):
        figure, grid = plt.subplots(2, 2, figsize=(11.0, 1.2 + 0.55 * len(run_names)), sharey=True,
                                    layout="constrained")
        for panel, (label, key) in zip(grid.ravel(), keys):
            values = [result.get(key) for result in metrics]
            heights = [np.nan if v is None else 100.0 * v for v in values]
            spread = None
            if errors is not None:
                spread = [np.nan if e.get(key) is None else 100.0 * e[key] for e in errors]
            colours = [OKABE_ITO[i % len(OKABE_ITO)] for i in range(len(run_names))]
            bars = panel.barh(positions, heights, xerr=spread, color=colours, edgecolor="#333333", linewidth=0.5,
                              error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#222222"})
            panel.bar_label(bars, labels=["n/a" if v is None else f"{100 * v:.1f}" for v in values], fontsize=7,
                            padding=3)
            panel.set_title(label)
            panel.set_xlim(0, 105 if max((h for h in heights if h == h), default=0) > 80 else
                           1.25 * max((h for h in heights if h == h), default=1.0))
            panel.set_xlabel("mean average precision (%)")
            panel.set_yticks(positions, list(run_names))
        figure.suptitle(wrap_title(title, 100))
    return figure


def training_curves(methods: Sequence[str], logs: Sequence[Sequence[dict]], title: str) -> Figure:
    """Per epoch, the training loss (sum of the recipe's loss terms, mean over the epoch's steps; log scale) and
    the validation mAP (%), one line per run, coloured by method (a method's seeds share its colour)."""
    order = list(dict.fromkeys(methods))
    styles = {m: (OKABE_ITO[i % len(OKABE_ITO)], ("-", "--", ":", "-.")[(i // len(OKABE_ITO)) % 4])
              for i, m in enumerate(order)}
    with matplotlib.rc_context(_RC):
        figure, (loss_axes, val_axes) = plt.subplots(1, 2, figsize=(11.0, 4.2), layout="constrained")
        for method, records in zip(methods, logs):
            colour, style = styles[method]
            epochs = np.array([shown_epoch(r["epoch"]) for r in records], dtype=np.float64)
            losses = np.array([sum(v for k, v in r.items() if k.startswith("loss_") and isinstance(v, (int, float)))
                               for r in records], dtype=np.float64)
            loss_axes.plot(epochs, losses, color=colour, linestyle=style, linewidth=1.0, alpha=0.85)
            val = [(shown_epoch(r["epoch"]), 100.0 * r["val_mAP"]) for r in records
                   if isinstance(r.get("val_mAP"), float)]
            if val:
                x, y = zip(*val)
                val_axes.plot(x, y, color=colour, linestyle=style, linewidth=1.0, alpha=0.85, marker="o",
                              markersize=2)
        values = np.concatenate([np.asarray(line.get_ydata(), dtype=np.float64) for line in loss_axes.get_lines()]
                                or [np.zeros(0)])
        if len(values) and np.all(values > 0) and values.max() / values.min() > 3:
            _log_axis(loss_axes, "y", values)  # the first epochs' drop would hide the later progress
        for axes in (loss_axes, val_axes):  # epochs are whole numbers: no 1.25, 1.50 ticks on short runs
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        loss_axes.set_title("training loss (sum of the recipe's terms)", fontsize=10)
        loss_axes.set_xlabel("epoch")
        loss_axes.set_ylabel("loss, mean over the epoch's steps")
        val_axes.set_title("validation mAP", fontsize=10)
        val_axes.set_xlabel("epoch")
        val_axes.set_ylabel("mean average precision (%)")
        counts = {m: sum(x == m for x in methods) for m in order}
        handles = [plt.Line2D([], [], color=styles[m][0], linestyle=styles[m][1],
                              label=f"{m} ({counts[m]} run{'s' if counts[m] > 1 else ''})") for m in order]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), frameon=False,
                      fontsize=8)
        figure.suptitle(wrap_title(title, 100))
    return figure


def ap_vs_train_count(split: Split, run_names: Sequence[str], metrics: Sequence[dict], title: str) -> Figure:
    """Per-class AP against the class's training videos (log x), one panel per run, groups coloured and bounded."""
    counts = split.classes["train_count"].to_numpy(dtype=np.float64)
    groups = split.classes["group"].astype(str).to_numpy()
    boundaries = _group_boundaries(counts, groups)
    columns = min(3, len(run_names))
    rows = -(-len(run_names) // columns)
    with matplotlib.rc_context(_RC):
        figure, axes_grid = plt.subplots(rows, columns, figsize=(4.2 * columns + 0.6, 3.4 * rows + 0.6),
                                         sharex=True, sharey=True, squeeze=False, layout="constrained")
        for index, (name, result) in enumerate(zip(run_names, metrics)):
            axes = axes_grid[index // columns][index % columns]
            ap = np.array([np.nan if v is None else v for v in result["per_class_ap"]], dtype=np.float64)
            shown = ~np.isnan(ap) & (counts > 0)
            for group in GROUPS:
                mask = shown & (groups == group)
                axes.scatter(counts[mask], 100.0 * ap[mask], s=10, alpha=0.75, color=GROUP_COLOURS[group],
                             label=group, linewidths=0)
            for boundary in boundaries:
                axes.axvline(boundary, color="#555555", linestyle="--", linewidth=0.8)
            _log_axis(axes, "x", counts[counts > 0])
            axes.set_ylim(-2, 102)
            left_out = int((~shown).sum())
            axes.set_title(name + (f"\n({left_out} classes without AP not shown)" if left_out else ""), fontsize=9)
            if index % columns == 0:
                axes.set_ylabel("class AP (%)")
            if index // columns == rows - 1:
                axes.set_xlabel("training videos of the class (log)")
        for index in range(len(run_names), rows * columns):
            axes_grid[index // columns][index % columns].set_visible(False)
        handles = [Patch(color=GROUP_COLOURS[g], label=g) for g in GROUPS]
        handles.append(plt.Line2D([], [], color="#555555", linestyle="--", label="group boundary"))
        figure.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False, fontsize=8)
        figure.suptitle(wrap_title(title, 40 * columns))
    return figure


def class_counts(split: Split, title: str) -> Figure:
    """Training videos per class, achieved against the profile's target, classes sorted by target, groups shaded."""
    classes = split.classes
    target = classes["target"].to_numpy(dtype=np.float64)
    achieved = classes["train_count"].to_numpy(dtype=np.float64)
    groups = classes["group"].astype(str).to_numpy()
    sort_key = np.where(np.isnan(target), achieved, target)
    order = np.lexsort((classes["class_id"].to_numpy(), -achieved, -sort_key))
    rank = np.arange(1, len(order) + 1)
    with matplotlib.rc_context(_RC):
        figure, axes = plt.subplots(figsize=(8.0, 4.2), layout="constrained")
        _shade_groups(axes, groups[order])
        axes.plot(rank, np.where(achieved[order] > 0, achieved[order], np.nan), marker="o", markersize=2.5,
                  linewidth=0.8, color="#000000", label="achieved")
        if not np.isnan(target).all():
            axes.plot(rank, np.where(target[order] > 0, target[order], np.nan), color="#E69F00", linewidth=1.6,
                      linestyle="--", label="target")
        _log_axis(axes, "y", np.concatenate([achieved[achieved > 0], target[target > 0]]))
        axes.set_xlim(0.5, len(order) + 0.5)
        axes.set_xlabel("class rank (by target, then achieved count)")
        axes.set_ylabel("training videos (log)")
        axes.set_title(wrap_title(title, 72))
        handles, _ = axes.get_legend_handles_labels()
        handles += [Patch(color=GROUP_COLOURS[g], alpha=0.18, label=f"{g} group") for g in GROUPS]
        axes.legend(handles=handles, fontsize=8, loc="upper right", frameon=False)
    return figure


def class_share(split: Split, title: str) -> Figure:
    """Each class's share of training videos against its share of annotated training seconds (log-log)."""
    classes = split.classes
    videos = classes["train_count"].to_numpy(dtype=np.float64)
    seconds = classes["train_seconds"].to_numpy(dtype=np.float64)
    groups = classes["group"].astype(str).to_numpy()
    with matplotlib.rc_context(_RC):
        figure, axes = plt.subplots(figsize=(5.8, 5.0), layout="constrained")
        usable = ~np.isnan(seconds) & (seconds > 0) & (videos > 0)
        if not usable.any() or np.nansum(seconds) <= 0:
            axes.text(0.5, 0.5, "no frame-level annotation in this split\n(no segment durations, e.g. VideoLT)",
                      ha="center", va="center", transform=axes.transAxes)
            axes.set_axis_off()
        else:
            video_share = videos / videos.sum()
            second_share = seconds / np.nansum(seconds)
            for group in GROUPS:
                mask = usable & (groups == group)
                axes.scatter(100 * video_share[mask], 100 * second_share[mask], s=12, alpha=0.8,
                             color=GROUP_COLOURS[group], label=group, linewidths=0)
            low = 100 * min(video_share[usable].min(), second_share[usable].min()) / 1.5
            high = 100 * max(video_share[usable].max(), second_share[usable].max()) * 1.5
            axes.plot([low, high], [low, high], color="#555555", linestyle="--", linewidth=0.8, label="equal share")
            for which in ("x", "y"):
                _log_axis(axes, which, np.array([low, high]))
            axes.set_xlim(low, high)
            axes.set_ylim(low, high)
            axes.set_xlabel("share of training videos (%, log)")
            axes.set_ylabel("share of annotated training seconds (%, log)")
            ratio_videos = video_share[usable].max() / video_share[usable].min()
            ratio_seconds = second_share[usable].max() / second_share[usable].min()
            axes.legend(fontsize=8, frameon=False, loc="upper left",
                        title=f"max/min: videos {ratio_videos:.0f}, seconds {ratio_seconds:.0f}", title_fontsize=8)
        axes.set_title(wrap_title(title, 52))
    return figure


def _log_axis(axes, which: str, values: np.ndarray) -> None:
    """A log axis labelled with plain numbers: 1-2-5 steps over a short range, decades over a long one."""
    (axes.set_xscale if which == "x" else axes.set_yscale)("log")
    axis = axes.xaxis if which == "x" else axes.yaxis
    span = np.log10(values.max() / values.min()) if len(values) and values.min() > 0 else 0.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if span > 2.5 else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _group_boundaries(counts: np.ndarray, groups: np.ndarray) -> list[float]:
    """Training counts between adjacent groups (tail | medium | head), where their count ranges do not overlap."""
    ranges = [(counts[groups == g].min(), counts[groups == g].max()) for g in reversed(GROUPS) if (groups == g).any()]
    boundaries = []
    for (_, lower_max), (upper_min, _) in zip(ranges, ranges[1:]):
        if upper_min > lower_max:
            boundaries.append(float(np.sqrt(max(lower_max, 0.5) * upper_min)))
    return boundaries


def _shade_groups(axes, ordered_groups: np.ndarray) -> None:
    start = 0
    for index in range(1, len(ordered_groups) + 1):
        if index == len(ordered_groups) or ordered_groups[index] != ordered_groups[start]:
            colour = GROUP_COLOURS.get(str(ordered_groups[start]), "#999999")
            axes.axvspan(start + 0.5, index + 0.5, color=colour, alpha=0.18, linewidth=0)
            start = index
