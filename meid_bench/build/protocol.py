"""Protocol v1: from a source's canonical table to the train / val / test / classes tables and the manifest.

``docs/protocol.md`` is the readable statement of what this module does; keep the two in step.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa

from meid_bench._version import __version__
from meid_bench.build import readers
from meid_bench.build.profile import PROFILES, class_targets
from meid_bench.build.select import fidelity, select_videos
from meid_bench.build.split_io import CLASS_SCHEMA, SPLIT_FORMAT, SPLIT_FORMAT_VERSION, write_split
from meid_bench.build.table import VideoTable
from meid_bench.errors import MeidBenchError, VerificationError
from meid_bench.bounds import check_seed
from meid_bench.outputs import Output, check_outputs, source_input

PROTOCOL_VERSION = "v1"
BENCHMARKS = ("charadeslt", "charadesegolt", "videolt")
SOURCE_FOLDERS = {"charadeslt": "charades", "charadesegolt": "charadesego", "videolt": "videolt"}
# Group thresholds on training videos per class: head if count > head_above, tail if count < tail_below.
DEFAULT_GROUPS = {"charadeslt": (100, 20), "charadesegolt": (100, 20), "videolt": (500, 101)}
# What "close to the targets" means (docs/protocol.md): achieved IF within 10% of the requested one, and
# |log(achieved / target)| over classes at most 0.05 at the median and 0.20 at the 90th percentile.
FIDELITY_BOUNDS = {"imbalance_relative_error": 0.10, "abs_log_ratio_median": 0.05, "abs_log_ratio_p90": 0.20}
# Scales tried by --target-scale auto, from the count bound down.
AUTO_SCALES = tuple(round(1.0 - 0.05 * i, 2) for i in range(11))


@dataclass(frozen=True)
class BuildOptions:
    benchmark: str
    imbalance: float = 100.0
    profile: str = "exponential"
    seed: int = 0
    view: str = "ego"
    head_above: int | None = None
    tail_below: int | None = None
    val_per_class: int = 20
    target_scale: float | None = None  # None: "auto", the largest scale whose selection meets FIDELITY_BOUNDS

    def resolved(self) -> "BuildOptions":
        if self.benchmark not in BENCHMARKS:
            raise MeidBenchError(f"unknown benchmark {self.benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
        if self.profile not in PROFILES:
            raise MeidBenchError(f"--profile {self.profile!r}: choose one of {', '.join(PROFILES)}")
        if not np.isfinite(self.imbalance) or self.imbalance < 1:
            raise MeidBenchError(f"--imbalance {self.imbalance}: must be >= 1 (largest / smallest class target)")
        if self.target_scale is not None and not 0 < self.target_scale <= 1:
            raise MeidBenchError(f"--target-scale {self.target_scale}: must be in (0, 1], or 'auto'")
        if self.val_per_class < 0:
            raise MeidBenchError(f"--val-per-class {self.val_per_class}: must be >= 0")
        check_seed(self.seed)  # numpy's generators refuse a negative seed (a ValueError deep in the selection)
        head, tail = DEFAULT_GROUPS[self.benchmark]
        head = head if self.head_above is None else self.head_above
        tail = tail if self.tail_below is None else self.tail_below
        if tail > head + 1:
            raise MeidBenchError(f"--tail-below {tail} is above --head-above {head} + 1: the groups would overlap")
        return BuildOptions(**{**asdict(self), "head_above": head, "tail_below": tail})

    def parameters(self) -> dict:
        """The options that define the benchmark (recorded in the manifest)."""
        values = asdict(self)
        if self.benchmark == "videolt":  # VideoLT keeps its own splits: no profile, selection or view
            for name in ("imbalance", "profile", "view", "val_per_class", "seed", "target_scale"):
                values.pop(name)
        elif self.benchmark == "charadeslt":
            values.pop("view")
        return values


@dataclass
class BuiltSplit:
    tables: dict[str, pa.Table]
    manifest: dict


def assign_groups(train_counts: np.ndarray, head_above: int, tail_below: int) -> np.ndarray:
    return np.where(train_counts > head_above, "head", np.where(train_counts < tail_below, "tail", "medium"))


def _software() -> dict:
    return {"meid_bench": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": metadata.version("scipy"), "pyarrow": pa.__version__}  # scipy: not imported unless needed


def _subset(videos: VideoTable, name: str) -> VideoTable:
    return videos.take(np.flatnonzero(videos.subset == name))


def _fill_validation(pool: VideoTable, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Rows of ``pool`` for validation: classes from the rarest in the pool up, each topped up with pool videos in
    a seeded random order until it has ``min(per_class, available)`` positives."""
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(pool))
    available = pool.class_counts(num_classes)
    chosen = np.zeros(len(pool), dtype=bool)
    have = np.zeros(num_classes, dtype=np.int64)
    rows_of_class = [[] for _ in range(num_classes)]
    for row in order:  # rows of each class, in the seeded order
        for k in pool.labels_of(row):
            rows_of_class[k].append(row)
    for k in np.lexsort((np.arange(num_classes), available)):
        goal = min(per_class, available[k])
        for row in rows_of_class[k]:
            if have[k] >= goal:
                break
            if not chosen[row]:
                chosen[row] = True
                have[pool.labels_of(row)] += 1
    return np.flatnonzero(chosen)


def _class_table(classes: readers.ClassList, original: np.ndarray, targets: np.ndarray | None,
                 splits: dict[str, VideoTable], seconds: np.ndarray | None, groups: np.ndarray) -> pa.Table:
    num_classes = len(classes)
    columns = [
        pa.array(np.arange(num_classes, dtype=np.int32)),
        pa.array(classes.keys, type=pa.string()),
        pa.array(classes.names, type=pa.string()),
        pa.array(original.astype(np.int64)),
        pa.array(targets if targets is not None else np.full(num_classes, np.nan), type=pa.float64(),
                 from_pandas=True),
        *[pa.array(splits[name].class_counts(num_classes)) for name in ("train", "val", "test")],
        pa.array(seconds if seconds is not None else np.full(num_classes, np.nan), type=pa.float64(),
                 from_pandas=True),
        pa.array(groups.tolist(), type=pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=CLASS_SCHEMA)


def build_benchmark(options: BuildOptions, annotations: Path) -> BuiltSplit:
    """Read the source files in ``annotations`` and build the split tables and manifest (nothing is written)."""
    options = options.resolved()
    annotations = Path(annotations)
    if not annotations.is_dir():
        url = {"charadeslt": readers.CHARADES_URL, "charadesegolt": readers.CHARADES_EGO_URL,
               "videolt": readers.VIDEOLT_URL}[options.benchmark]
        raise MeidBenchError(f"{annotations}: annotation folder not found; download the {options.benchmark} source "
                             f"annotations from {url} and pass their folder with --annotations (or set "
                             "MEID_BENCH_DATA to the folder above it)")
    if options.benchmark == "videolt":
        return _build_videolt(options, annotations)
    if options.benchmark == "charadeslt":
        source = readers.read_charades(annotations)
    else:
        source = readers.read_charades_ego(annotations, options.view)
    return _build_long_tailed(options, source)


def _build_long_tailed(options: BuildOptions, source: readers.SourceData) -> BuiltSplit:
    classes, num_classes = source.classes, len(source.classes)
    train_all = _subset(source.videos, "train")
    labelled = train_all.num_labels > 0
    pool = train_all.take(np.flatnonzero(labelled))
    original = pool.class_counts(num_classes)
    if (original == 0).any():
        missing = classes.keys[int(np.flatnonzero(original == 0)[0])]
        raise MeidBenchError(f"class {missing} has no training video in the annotations; every class needs one "
                             "(check that the train file is complete)")
    bound_targets = class_targets(original, options.imbalance, options.profile)
    if bound_targets.min() < 1:
        smallest = classes.keys[int(np.argmin(bound_targets))]
        raise MeidBenchError(f"--imbalance {options.imbalance:g}: the {options.profile} profile leaves class "
                             f"{smallest} a target of {bound_targets.min():.2f} videos (< 1); lower --imbalance to "
                             f"at most {options.imbalance * bound_targets.min():.0f}")
    scale, targets, selection, scored, tried = _select_with_scale(pool, bound_targets, options)
    train = pool.take(np.flatnonzero(selection.selected))

    rest = ~selection.selected
    if "paired_video" in pool.extra:  # the other view of a kept video would leak its content into validation
        kept_ids = set(train.video_ids.tolist())
        rest &= np.array([p not in kept_ids for p in pool.extra["paired_video"]], dtype=bool)
    remainder = pool.take(np.flatnonzero(rest))
    val = remainder.take(_fill_validation(remainder, num_classes, options.val_per_class, options.seed))

    test_all = _subset(source.videos, "test")
    test = test_all.take(np.flatnonzero(test_all.num_labels > 0))
    test_counts = test.class_counts(num_classes)
    if (test_counts == 0).any():
        missing = classes.keys[int(np.flatnonzero(test_counts == 0)[0])]
        raise MeidBenchError(f"class {missing} has no positive video in the test file; every class must be "
                             "evaluable (check that the test file is complete)")

    splits = {"train": train, "val": val, "test": test}
    groups = assign_groups(train.class_counts(num_classes), options.head_above, options.tail_below)
    seconds = train.annotated_seconds(num_classes)
    tables = {name: table.to_arrow() for name, table in splits.items()}
    tables["classes"] = _class_table(classes, original, targets, splits, seconds, groups)
    achieved = train.class_counts(num_classes)
    manifest = _manifest(options, source, splits, groups)
    manifest["selection"] = {
        "objective": "sum_k log(a_k / t_k)^2",
        "train_videos_original": int(len(train_all)),
        "train_videos_without_labels": int((~labelled).sum()),
        "train_videos_kept": int(len(train)),
        "local_search_moves": int(selection.moves),
        "val_pool_videos": int(len(remainder)),
        "test_videos_without_labels_removed": int(len(test_all) - len(test)),
    }
    manifest["fidelity"] = scored | {
        "target_scale": scale,
        "bounds": FIDELITY_BOUNDS,
        "bounds_met": _meets(scored),
        "scales_tried": tried,
    }
    positive = seconds > 0
    manifest["frame_level"] = {
        "train_seconds_total": float(seconds.sum()),
        "train_seconds_max_over_min": float(seconds.max() / seconds[positive].min()) if positive.any() else None,
        "train_videos_max_over_min": float(achieved.max() / achieved.min()),
    }
    return BuiltSplit(tables, manifest)


def _meets(scored: dict) -> bool:
    return all(scored[name] <= bound for name, bound in FIDELITY_BOUNDS.items())


def _violation(scored: dict) -> float:
    return max(scored[name] / bound for name, bound in FIDELITY_BOUNDS.items())


def _select_with_scale(pool: VideoTable, bound_targets: np.ndarray, options: BuildOptions):
    """Targets = scale x the count-bound profile. With --target-scale auto, the largest scale in AUTO_SCALES whose
    selection meets FIDELITY_BOUNDS (co-occurrence makes the count bound itself unreachable at high IF); if none
    does, the scale that comes closest. Returns (scale, targets, selection, fidelity, scales tried)."""
    scales = AUTO_SCALES if options.target_scale is None else (options.target_scale,)
    best, tried = None, []
    for scale in scales:
        targets = bound_targets * scale
        if targets.min() < 1:
            break
        selection = select_videos(pool.label_offsets, pool.label_values, targets, options.seed)
        scored = fidelity(selection.counts, targets, options.imbalance)
        tried.append(scale)
        if best is None or _violation(scored) < _violation(best[3]):
            best = (scale, targets, selection, scored)
        if _meets(scored):
            best = (scale, targets, selection, scored)
            break
    return (*best, tried)


def _build_videolt(options: BuildOptions, annotations: Path) -> BuiltSplit:
    source, listed_counts = readers.read_videolt(annotations)
    num_classes = len(source.classes)
    splits = {"train": _subset(source.videos, "train"), "val": _subset(source.videos, "validate"),
              "test": _subset(source.videos, "test")}
    counts = splits["train"].class_counts(num_classes)
    if not np.array_equal(counts, listed_counts):
        k = int(np.flatnonzero(counts != listed_counts)[0])
        raise MeidBenchError(f"{annotations / readers.VIDEOLT_COUNTS}: class {k} has {listed_counts[k]} train "
                             f"videos listed but train.lst has {counts[k]}; the files do not belong together")
    groups = assign_groups(counts, options.head_above, options.tail_below)
    tables = {name: table.to_arrow() for name, table in splits.items()}
    tables["classes"] = _class_table(source.classes, counts, None, splits, None, groups)
    manifest = _manifest(options, source, splits, groups)
    manifest["fidelity"] = {"train_videos_max_over_min": float(counts.max() / max(counts.min(), 1))}
    return BuiltSplit(tables, manifest)


def _manifest(options: BuildOptions, source: readers.SourceData, splits: dict[str, VideoTable],
              groups: np.ndarray) -> dict:
    return {
        "format": SPLIT_FORMAT,
        "format_version": SPLIT_FORMAT_VERSION,
        "protocol": PROTOCOL_VERSION,
        "benchmark": options.benchmark,
        "parameters": options.parameters(),
        "software": _software(),
        "sources": source.sources,
        "quirks": source.quirks,
        "groups": {
            "rule": "head: train_count > head_above; tail: train_count < tail_below; medium: the rest",
            "head_above": options.head_above,
            "tail_below": options.tail_below,
            "sizes": {name: int((groups == name).sum()) for name in ("head", "medium", "tail")},
        },
        "rows": {name: len(table) for name, table in splits.items()} | {"classes": len(source.classes)},
        "num_classes": len(source.classes),
    }


def build_and_write(options: BuildOptions, annotations: Path, out: Path, force: bool = False,
                    expect_reference: bool = False) -> Path:
    """Build a benchmark and write its split folder to ``out``.

    ``expect_reference``: the build must reproduce the shipped reference of its benchmark; options that no
    reference covers are refused before any work, and a build that differs is a VerificationError raised before
    anything is written (an existing ``out`` stays as it was).
    """
    from meid_bench.build.reference import built_reference, compare_reference, load_reference, reference_path

    # Fail before the work, not after: the output rule (an output never overwrites an input, --force replaces only a
    # split folder; outputs.py).
    check_outputs([Output(Path(out), "--out", "split", folder=True)], [source_input(annotations, "--annotations")],
                  force)
    out = Path(out)
    reference = None
    if expect_reference:
        reference = load_reference(options.benchmark)
        if reference is None:
            raise MeidBenchError(f"--expect-reference: meid-bench ships no reference for {options.benchmark}; "
                                 "build without --expect-reference")
        if json.loads(json.dumps(options.resolved().parameters())) != reference["parameters"]:
            raise MeidBenchError(f"--expect-reference: the shipped reference of {options.benchmark} is the default "
                                 f"build ({reference['parameters']}); these options define another benchmark, drop "
                                 "them or --expect-reference")
    built = build_benchmark(options, annotations)
    if reference is not None:
        status, differences = compare_reference(built_reference(built.manifest, built.tables), reference)
        if status != "match":
            raise VerificationError(f"{out}: not written: the build differs from the shipped reference "
                                    f"{reference_path(options.benchmark)}: {'; '.join(differences)}")
    return write_split(out, built.tables, built.manifest, force=force)
