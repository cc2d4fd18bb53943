"""The report's unit: one split with its runs, their test and validation metrics and training logs, and the
verdict line that opens the report for it (benchmark, real or SIMULATED features, runs, best method by validation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meid_bench.build.split_io import GROUPS, Split
from meid_bench.errors import MeidBenchError
from meid_bench.runs import (
    Run,
    load_run_split,
    read_run,
    read_training_log,
    run_test_metrics,
    run_val_metrics,
)


@dataclass
class SplitSection:
    """One split of the report: its runs with their metrics and logs, and the figures made for it."""

    split: Split
    slug: str  # names the split's figure folder and its anchor on the page
    title: str  # what the page calls the split: its benchmark (and folder, where two splits share a benchmark)
    runs: list[Run]
    metrics: list[dict]  # test
    val_metrics: list[dict | None] = field(default_factory=list)
    logs: list[list[dict]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path)

    @property
    def group_sizes(self) -> dict[str, int]:
        """Classes per group (and ``all``) in the split."""
        groups = self.split.classes["group"].astype(str)
        return {"all": self.split.num_classes, **{g: int((groups == g).sum()) for g in GROUPS}}

    @property
    def annotations(self) -> str:
        """``official``: the split was built from the very annotation files the shipped reference of its benchmark
        names (same file names and sha256); ``other``: from other files, such as the demo's synthetic set or an
        edited copy, so it is not that benchmark; ``unknown``: no reference is shipped for the benchmark."""
        return annotations_kind(self.split)

    @property
    def features(self) -> str:
        """``simulated``, ``real``, ``mixed`` (both among the runs) or ``unknown``."""
        kinds = {run.features_kind for run in self.runs}
        if kinds == {"simulated"} or kinds == {"real"}:
            return kinds.pop()
        return "mixed" if {"simulated", "real"} <= kinds else "unknown"

    def methods(self) -> list[str]:
        return list(dict.fromkeys(run.method for run in self.runs))


def annotations_kind(split: Split) -> str:
    """See :attr:`SplitSection.annotations`."""
    from meid_bench.build.reference import load_reference

    reference = load_reference(split.name)
    if reference is None:
        return "unknown"
    mine = sorted((str(s.get("file")), str(s.get("sha256"))) for s in split.manifest.get("sources", []))
    theirs = sorted((s["file"], s["sha256"]) for s in reference["sources"])
    return "official" if mine == theirs else "other"


def collect_sections(run_dirs: Sequence[str | os.PathLike]) -> list[SplitSection]:
    """Read each run, load and check its split, get its test and validation metrics and its training log; group
    the runs by split, in first-seen order."""
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
        section = sections.get(split.checksum)
        if section is None:
            slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{split.name}-{split.checksum[:8]}")
            section = sections[split.checksum] = SplitSection(split=split, slug=slug, title=split.name, runs=[],
                                                              metrics=[])
        section.runs.append(run)
        section.metrics.append(run_test_metrics(run, split))
        section.val_metrics.append(run_val_metrics(run, split))
        section.logs.append(read_training_log(run))
    if not sections:
        raise MeidBenchError("report: no runs given; pass RUN_DIR arguments or train a run under runs/")
    result = list(sections.values())
    names = [s.split.name for s in result]
    for section in result:
        if section.annotations == "other":  # never called by the name of a benchmark it is not
            section.title = f"{section.split.path.name} ({section.split.name} protocol, other annotations)"
        elif names.count(section.split.name) > 1:
            section.title = f"{section.split.name} ({section.split.path.name})"
    return result


@dataclass(frozen=True)
class Verdict:
    """What a reader must know first about a split's results."""

    title: str
    features: str  # simulated, real, mixed, unknown
    runs: str  # "6 runs: 2 methods × 3 seeds"
    best_method: str | None  # by mean validation mAP over the method's runs
    best_val_pct: float | None
    best_test_pct: float | None
    annotations: str = "official"  # official, other, unknown (SplitSection.annotations)

    @property
    def features_text(self) -> str:
        text = self._features_text()
        if self.annotations == "other":
            text += (" on annotations that are not the benchmark's official files (SIMULATED, like the demo's, or "
                     "edited: not a result on the benchmark)")
        return text

    def _features_text(self) -> str:
        return {"simulated": "SIMULATED features (proxy features, not from video: not a result on the real "
                             "benchmark)",
                "real": "real features",
                "mixed": "MIXED features: runs on SIMULATED and on real features side by side",
                "unknown": "features not recorded (runs from an older meid-bench)"}[self.features]

    @property
    def best_text(self) -> str:
        if self.best_method is None:
            return "best method by validation: none (no validation metrics)"
        test = "n/a" if self.best_test_pct is None else f"{self.best_test_pct:.2f}%"
        return (f"best method by validation mAP: {self.best_method} (validation {self.best_val_pct:.2f}%, test "
                f"{test})")

    def text(self) -> str:
        return f"{self.title}: {self.features_text}; {self.runs}; {self.best_text}"


def verdict(section: SplitSection) -> Verdict:
    methods = section.methods()
    counts = [sum(run.method == m for run in section.runs) for m in methods]
    total = len(section.runs)
    runs = f"{total} run{'s' if total != 1 else ''}"
    if len(set(counts)) == 1 and counts[0] > 1:
        runs += f": {len(methods)} method{'s' if len(methods) != 1 else ''} × {counts[0]} seeds"
    else:
        runs += f" of {len(methods)} method{'s' if len(methods) != 1 else ''}"
    best, best_val, best_test = None, None, None
    for method in methods:
        indices = [i for i, run in enumerate(section.runs) if run.method == method]
        val = [section.val_metrics[i]["mAP"] for i in indices
               if section.val_metrics[i] is not None and section.val_metrics[i].get("mAP") is not None]
        if len(val) != len(indices):
            continue  # a method is chosen on all of its runs or not at all
        mean_val = 100.0 * float(np.mean(val))
        if best_val is None or mean_val > best_val:
            test = [section.metrics[i].get("mAP") for i in indices]
            best, best_val = method, mean_val
            best_test = None if any(t is None for t in test) else 100.0 * float(np.mean(test))
    return Verdict(section.title, section.features, runs, best, best_val, best_test, section.annotations)
