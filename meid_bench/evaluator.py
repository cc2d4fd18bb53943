"""The one evaluation of a split: :class:`Evaluator` checks predictions against a split subset and scores them.

Predictions come either in memory (video ids + a [videos, classes] score array or tensor) or as a predictions
Parquet file (:func:`read_predictions`, :func:`write_predictions`; the format is in ``docs/evaluation.md``), so that
code outside meid-bench gets scored exactly as meid-bench's own runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meid_bench._version import __version__
from meid_bench.build.split_io import GROUPS, Split, load_split
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import write_text_atomic
from meid_bench.outputs import Input, Output, check_outputs
from meid_bench.metrics import (
    as_score_array,
    average_precision,
    find_non_finite,
    group_mean_average_precision,
    mean_average_precision,
    score_scale,
    top_k_hit_accuracy,
)

METRICS_FORMAT = "meid-bench-metrics"
METRICS_FORMAT_VERSION = 1
TOP_K = (1, 5)
_SHOW = 5  # ids quoted in an error message


class Evaluator:
    """Scores predictions for one subset of one split, after checking them (ids, shape, finite values).

    >>> evaluator = Evaluator("splits/charadeslt")          # doctest: +SKIP
    >>> result = evaluator.eval(video_ids, scores)           # doctest: +SKIP
    >>> print(evaluator.table(result))                       # doctest: +SKIP
    """

    def __init__(self, split: Split | str | os.PathLike, subset: str = "test") -> None:
        self.split = split if isinstance(split, Split) else load_split(split)
        table = self.split.table(subset)  # rejects an unknown subset
        self.subset = subset
        self.video_ids: list[str] = [str(v) for v in table["video_id"]]
        self._index = pd.Index(self.video_ids)
        self.targets = self.split.multi_hot(subset)
        self.class_keys: list[str] = [str(k) for k in self.split.classes["class_key"]]

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_classes(self) -> int:
        return self.split.num_classes

    @property
    def expected_input_format(self) -> dict:
        """What :meth:`eval` and the predictions Parquet file must hold for this split subset."""
        return {
            "benchmark": self.split.name,
            "split_checksum": self.split.checksum,
            "subset": self.subset,
            "num_videos": self.num_videos,
            "num_classes": self.num_classes,
            "video_ids": f"{self.num_videos} distinct strings: exactly the video ids of the split's {self.subset!r} "
                         "subset, in any order (rows are reordered by id)",
            "scores": f"a finite float array or tensor of shape [{self.num_videos}, {self.num_classes}], row i for "
                      "video_ids[i], column c for class_id c; logits or probabilities (only the order within a "
                      "class matters; rank on logits when sigmoid outputs saturate to 1.0)",
            "parquet": "column 'video_id' (string) then one float32 or float64 column per class named by its "
                       "class_key, in class_id order; no nulls; no other columns",
            "class_keys": list(self.class_keys),
        }

    def eval(self, video_ids: Sequence[str], scores: object, source: str = "predictions") -> dict:
        """Check and score predictions; returns the plain metrics dict (JSON-ready, see ``docs/evaluation.md``).

        ``source`` names the input in error messages (a file path when the predictions came from a file).
        """
        score_array = self.checked_scores(video_ids, scores, source)
        ap = average_precision(score_array, self.targets)
        overall = mean_average_precision(ap)
        groups = group_mean_average_precision(ap, self.split.groups)
        top_k = top_k_hit_accuracy(score_array, self.targets, TOP_K)
        result: dict = {
            "format": METRICS_FORMAT,
            "format_version": METRICS_FORMAT_VERSION,
            "benchmark": self.split.name,
            "split_checksum": self.split.checksum,
            "subset": self.subset,
            "num_videos": self.num_videos,
            "num_classes": self.num_classes,
            "score_scale": score_scale(score_array),
            "mAP": overall.value,
        }
        for name in GROUPS:
            result[f"mAP_{name}"] = groups[name].value
        result["classes_evaluated"] = overall.classes_evaluated
        for name in GROUPS:
            result[f"classes_evaluated_{name}"] = groups[name].classes_evaluated
        result["classes_without_positives"] = overall.classes_without_positives
        for name in GROUPS:
            result[f"classes_without_positives_{name}"] = groups[name].classes_without_positives
        for k in TOP_K:
            result[f"top{k}"] = top_k.hits[k]
        result["topk_videos_evaluated"] = top_k.videos_evaluated
        result["videos_without_labels"] = top_k.videos_without_labels
        result["per_class_ap"] = [None if np.isnan(v) else float(v) for v in ap]
        result["meid_bench_version"] = __version__
        return result

    def table(self, result: dict) -> str:
        """A printable text table of a result from :meth:`eval`."""
        lines = [f"{result['benchmark']} {result['subset']} (split {result['split_checksum'][:12]}): "
                 f"{result['num_videos']} videos, {result['num_classes']} classes, scores look like "
                 f"{result['score_scale']}s",
                 f"{'':10}{'mAP':>8}  {'classes evaluated':>18}"]
        rows = [("overall", "mAP", "classes_evaluated", "classes_without_positives")]
        rows += [(name, f"mAP_{name}", f"classes_evaluated_{name}", f"classes_without_positives_{name}")
                 for name in GROUPS]
        for label, value_key, evaluated_key, without_key in rows:
            total = result[evaluated_key] + result[without_key]
            lines.append(f"{label:10}{_fmt(result[value_key]):>8}  {result[evaluated_key]:>9d} of {total:<6d}")
        for k in TOP_K:
            lines.append(f"{'top-' + str(k) + ' hit':10}{_fmt(result[f'top{k}']):>8}  "
                         f"{result['topk_videos_evaluated']:>9d} labelled videos")
        notes = []
        if result["classes_without_positives"]:
            notes.append(f"{result['classes_without_positives']} classes have no positive video in this subset and "
                         "are left out of every mean")
        if result["videos_without_labels"]:
            notes.append(f"{result['videos_without_labels']} videos have no label: negatives for every class, left "
                         "out of top-k")
        lines += [f"note: {n}" for n in notes]
        return "\n".join(line.rstrip() for line in lines)

    def per_class(self, result: dict) -> pd.DataFrame:
        """One row per class: class_id, class_key, name, group, train_count, ``<subset>_positives`` and ap (empty
        where the class has no positive in the subset)."""
        classes = self.split.classes
        return pd.DataFrame({
            "class_id": classes["class_id"].astype("int64").to_numpy(),
            "class_key": self.class_keys,
            "name": classes["class_name"].astype(str).to_numpy(),
            "group": classes["group"].astype(str).to_numpy(),
            "train_count": classes["train_count"].astype("int64").to_numpy(),
            f"{self.subset}_positives": self.targets.sum(axis=0, dtype=np.int64),
            "ap": pd.array(result["per_class_ap"], dtype="Float64"),
        })

    def checked_scores(self, video_ids: Sequence[str], scores: object, source: str = "predictions") -> np.ndarray:
        """The checks of :meth:`eval` (every video of the subset exactly once, no other id, finite scores), then the
        scores reordered to the subset's rows (aligned with :attr:`targets`): for readers that need more than the
        metrics (``meid-bench diagnose``, the report's bootstrap)."""
        score_array = as_score_array(scores, name=source)
        rows, cols = score_array.shape
        if cols != self.num_classes:
            raise MeidBenchError(f"{source}: scores have {cols} classes (columns), the split "
                                 f"{self.split.path} has {self.num_classes}; score every class of the split")
        ids = [str(v) for v in video_ids]
        if len(ids) != rows:
            raise MeidBenchError(f"{source}: {len(ids)} video ids for {rows} rows of scores; give one id per row")
        given = pd.Index(ids)
        if given.has_duplicates:
            duplicated = given[given.duplicated()].unique()
            raise MeidBenchError(f"{source}: video_id: {len(duplicated)} ids appear more than once (e.g. "
                                 f"{_quote(duplicated)}); give one row per video")
        missing = self._index.difference(given, sort=False)
        extra = given.difference(self._index, sort=False)
        if len(missing):
            also = (f", and {len(extra)} given ids are not in it (e.g. {_quote(extra)}): predictions for another "
                    "subset or split?" if len(extra) else "")
            raise MeidBenchError(f"{source}: video_id: {len(missing)} videos of the split's {self.subset!r} subset "
                                 f"have no scores (e.g. {_quote(missing)}){also}; score every video of the subset")
        if len(extra):
            raise MeidBenchError(f"{source}: video_id: {len(extra)} ids are not in the split's {self.subset!r} subset "
                                 f"(e.g. {_quote(extra)}); score only that subset's videos, with the same split")
        non_finite = find_non_finite(score_array)
        if non_finite is not None:
            row, col, count = non_finite
            raise MeidBenchError(f"{source}: {count} scores are NaN or infinite (first: video {ids[row]!r}, class "
                                 f"{self.class_keys[col]}: {score_array[row, col]}); write finite logits or "
                                 "probabilities")
        order = given.get_indexer(self._index)
        if np.array_equal(order, np.arange(rows)):
            return score_array
        return score_array[order]


def read_predictions(path: str | os.PathLike, class_keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Read a predictions Parquet file: returns (video ids, scores [videos, classes] in ``class_keys`` order).

    Class columns are found by name, so their order in the file does not matter; float32 columns give a float32
    array, any float64 column gives float64 (never narrowed: narrowing could create ties).
    """
    path = Path(path)
    if not path.is_file():
        raise MeidBenchError(f"{path}: no such predictions file; write one as docs/evaluation.md describes")
    try:
        names = pq.read_schema(path).names
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise MeidBenchError(f"{path}: column {repeated[0]!r} appears more than once; write one column per "
                                 "class and one video_id column")
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MeidBenchError(f"{path}: unreadable Parquet ({first}); write the predictions again") from None
    for name, column in zip(table.column_names, table.columns):
        try:
            column.validate(full=True)  # e.g. ids that are not UTF-8
        except pa.ArrowInvalid as exc:
            raise MeidBenchError(f"{path}: column {name!r}: invalid data ({str(exc).splitlines()[0][:120]}); write "
                                 "the predictions again") from None
    if "video_id" not in names:
        raise MeidBenchError(f"{path}: no 'video_id' column; the first column must hold the video ids (strings)")
    id_column = table.column("video_id")
    if not (pa.types.is_string(id_column.type) or pa.types.is_large_string(id_column.type)):
        raise MeidBenchError(f"{path}: column 'video_id' has type {id_column.type}; write the ids as strings")
    if id_column.null_count:
        raise MeidBenchError(f"{path}: column 'video_id' has {id_column.null_count} nulls; every row needs an id")
    wanted = set(class_keys)
    missing = [k for k in class_keys if k not in names]
    if missing:
        raise MeidBenchError(f"{path}: {len(missing)} class columns are missing (e.g. {', '.join(missing[:_SHOW])}); "
                             f"write one score column per class of the split ({len(class_keys)}), named by class_key")
    extra = [n for n in names if n != "video_id" and n not in wanted]
    if extra:
        raise MeidBenchError(f"{path}: {len(extra)} columns are not classes of the split (e.g. "
                             f"{', '.join(map(str, extra[:_SHOW]))}); the split has {len(class_keys)} classes, "
                             "remove the other columns or evaluate against the split the predictions were made for")
    dtype = np.float32
    for key in class_keys:
        column = table.column(key)
        if not pa.types.is_floating(column.type):
            raise MeidBenchError(f"{path}: column {key!r} has type {column.type}; write scores as float32 or float64")
        if column.null_count:
            raise MeidBenchError(f"{path}: column {key!r} has {column.null_count} nulls; every score must be a number")
        if column.type == pa.float64():
            dtype = np.float64
    # Filled class-major, so the returned [videos, classes] view is column-contiguous: the AP sorts need no copy.
    class_major = np.empty((len(class_keys), table.num_rows), dtype=dtype)
    for row, key in enumerate(class_keys):
        class_major[row] = table.column(key).to_numpy()
    return [str(v) for v in id_column.to_pylist()], class_major.T


def write_predictions(path: str | os.PathLike, video_ids: Sequence[str], scores: object, class_keys: Sequence[str],
                      dtype: type = np.float32, force: bool = False) -> Path:
    """Write a predictions Parquet file (``video_id`` then one column per class named by ``class_key``), atomically.

    ``dtype`` float32 (the default, the convention for runs) or float64. An existing file is kept unless ``force``.
    """
    path = Path(path)
    score_array = as_score_array(scores)
    if score_array.shape != (len(video_ids), len(class_keys)):
        raise MeidBenchError(f"{path}: scores have shape {score_array.shape}, expected "
                             f"({len(video_ids)}, {len(class_keys)}) for the ids and class keys given")
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise MeidBenchError(f"{path}: dtype must be float32 or float64, got {np.dtype(dtype)}")
    if path.exists() and not force:
        raise MeidBenchError(f"{path}: already exists; pass --force to replace it or choose another path")
    columns = {"video_id": pa.array([str(v) for v in video_ids], type=pa.string())}
    for col, key in enumerate(class_keys):
        columns[str(key)] = pa.array(np.ascontiguousarray(score_array[:, col], dtype=dtype))
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(handle)
    try:
        pq.write_table(table, staging, compression="zstd", compression_level=3, use_dictionary=False,
                       write_statistics=False, store_schema=False)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def metrics_paths(out_dir: str | os.PathLike, subset: str) -> list[Path]:
    """Where :func:`write_metrics` writes a subset's metrics: ``metrics[_<subset>].json``, ``per_class[...].csv``."""
    out = Path(out_dir)
    suffix = "" if subset == "test" else f"_{subset}"
    return [out / f"metrics{suffix}.json", out / f"per_class{suffix}.csv"]


def check_metrics_outputs(out_dir: str | os.PathLike, subset: str, force: bool = False,
                          inputs: Sequence[Input] = ()) -> list[Path]:
    """Refuse, before any work, metrics outputs that cannot be written, exist without ``force``, are not metrics
    files meid-bench wrote (what ``force`` may replace) or collide with ``inputs`` (outputs.py)."""
    metrics, per_class = metrics_paths(out_dir, subset)
    return check_outputs([Output(Path(out_dir), "--out", "folder", folder=True, adds_to=True),
                          Output(metrics, "--out", "metrics"), Output(per_class, "--out", "per-class")],
                         inputs, force)[1:]


def write_metrics(out_dir: str | os.PathLike, result: dict, per_class: pd.DataFrame, force: bool = False) -> list[Path]:
    """Write ``metrics.json`` and ``per_class.csv`` (``metrics_val.json``/``per_class_val.csv`` for the val subset)
    into ``out_dir``, each atomically; existing files are kept unless ``force``. Returns the two paths."""
    out = Path(out_dir)
    targets = check_metrics_outputs(out, result["subset"], force)
    out.mkdir(parents=True, exist_ok=True)
    texts = [json.dumps(result, indent=2) + "\n", per_class.to_csv(index=False, lineterminator="\n")]
    for target, text in zip(targets, texts):
        write_text_atomic(target, text)
    return targets


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _quote(values: pd.Index) -> str:
    shown = ", ".join(repr(str(v)) for v in list(values)[:_SHOW])
    return shown + (", ..." if len(values) > _SHOW else "")
