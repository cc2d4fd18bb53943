"""Scoring multi-label predictions: per-class average precision, (group) mean AP and top-k hit accuracy.

The protocol is written out in ``docs/evaluation.md``; in short:

* Average precision of a class is scikit-learn's ``average_precision_score``: non-interpolated, every distinct score
  is one threshold (tied scores enter together, never in sort order), precision computed in float64. Equivalently,
  AP = mean over the class's positive videos i of  #{positives with score >= s_i} / #{videos with score >= s_i}.
* A class with no positive video in the evaluated subset has no AP (NaN in the per-class array, ``None`` in dicts).
  It is left out of every mean and counted in ``classes_without_positives``; a mean over zero classes is ``None``.
* A video with no label is a negative for every class (it still ranks against the positives).
* Top-k hit accuracy: a labelled video is a hit at k if one of its labels has at most k classes (itself included)
  scoring greater than or equal to it - ties never help. Videos with no label are left out and counted.

Scores and targets may be numpy arrays or torch tensors. Scores keep their own floating type for ranking (float32
stays float32: widening would not change the order, narrowing would create ties), and every ratio and mean is
computed in float64.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from meid_bench.errors import MeidBenchError

# Classes sorted together in one block; large enough to amortize Python overhead, small enough to fit in cache-ish
# memory and to spread over threads.
_CLASS_BLOCK = 64
# Labelled (video, class) pairs compared against their video's row at once when computing top-k.
_PAIR_BLOCK = 4096
# Rows per tile when copying a class block to class-major order (a tile stays in cache: ~3x faster than one copy),
# and rows per chunk when scanning for NaN/inf.
_TILE_ROWS = 512
_ROW_BLOCK = 4096


@dataclass(frozen=True)
class MeanAP:
    """A mean AP over a set of classes, with how many of them had a positive (were evaluated) and how many not."""

    value: float | None
    classes_evaluated: int
    classes_without_positives: int


@dataclass(frozen=True)
class TopKAccuracy:
    """Top-k hit accuracy for each k, over ``videos_evaluated`` labelled videos (``videos_without_labels`` left out)."""

    hits: dict[int, float | None]
    videos_evaluated: int
    videos_without_labels: int


def as_score_array(scores: object, name: str = "scores") -> np.ndarray:
    """``scores`` as a 2-D floating numpy array, without copying when it already is one.

    torch tensors are detached and moved to the CPU; float16 and bfloat16 are widened to float32 (exact), integers
    to float64 (exact up to 2**53).
    """
    array = _to_numpy(scores)
    if array.ndim != 2:
        raise MeidBenchError(f"{name}: expected a 2-D [videos, classes] array, got shape {tuple(array.shape)}; "
                             "pass one row per video and one column per class")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    elif not np.issubdtype(array.dtype, np.floating):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise MeidBenchError(f"{name}: dtype {array.dtype} is not numeric; pass float scores")
        array = array.astype(np.float64)
    return array


def as_target_array(targets: object, shape: tuple[int, int], name: str = "targets") -> np.ndarray:
    """``targets`` as a 2-D 0/1 array (uint8 or bool kept as is), checked against the scores' ``shape``."""
    array = _to_numpy(targets)
    if tuple(array.shape) != tuple(shape):
        raise MeidBenchError(f"{name}: shape {tuple(array.shape)} does not match the scores' shape {tuple(shape)}; "
                             "pass one multi-hot row per scored video")
    if array.dtype == np.bool_ or array.dtype == np.uint8:
        if array.dtype == np.uint8 and array.size and array.max() > 1:
            raise MeidBenchError(f"{name}: values must be 0 or 1 (multi-hot); found {int(array.max())}")
        return array
    if array.size and not np.isin(array, (0, 1)).all():
        raise MeidBenchError(f"{name}: values must be 0 or 1 (multi-hot)")
    return array.astype(np.uint8)


def find_non_finite(scores: np.ndarray) -> tuple[int, int, int] | None:
    """(row, column, count) of the first NaN or infinite score and how many there are; None when all are finite.

    Scans in row blocks so that no [videos, classes] boolean temporary is made.
    """
    first, count = None, 0
    for start in range(0, scores.shape[0], _ROW_BLOCK):
        finite = np.isfinite(scores[start:start + _ROW_BLOCK])
        if not finite.all():
            bad = np.argwhere(~finite)
            count += len(bad)
            if first is None:
                first = (start + int(bad[0][0]), int(bad[0][1]))
    return None if first is None else (first[0], first[1], count)


def check_finite(scores: np.ndarray, name: str = "scores") -> None:
    """Raise :class:`MeidBenchError` naming the first NaN or infinite score (row, column) and how many there are."""
    found = find_non_finite(scores)
    if found is not None:
        row, col, count = found
        raise MeidBenchError(f"{name}: {count} scores are NaN or infinite (first at row {row}, column {col}: "
                             f"{scores[row, col]}); every score must be a finite number (logits or probabilities)")


def score_scale(scores: np.ndarray) -> str:
    """``"probability"`` if every score lies in [0, 1], else ``"logit"`` (what the scores look like, for records)."""
    if scores.size == 0:
        return "probability"
    return "probability" if float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0 else "logit"


def average_precision(scores: object, targets: object, num_threads: int | None = None) -> np.ndarray:
    """Per-class average precision, exactly scikit-learn's ``average_precision_score(targets[:, c], scores[:, c])``.

    ``scores``: [videos, classes] floats (numpy or torch), finite. ``targets``: [videos, classes] multi-hot 0/1.
    Returns a float64 array of length ``classes``; NaN where a class has no positive video (AP undefined there: see
    :func:`mean_average_precision` for how means skip it). ``num_threads`` defaults to the usable CPU count.

    Method: each block of classes is copied class-major and sorted (a value sort, no argsort); for each positive,
    a binary search gives how many videos score at least as high, and a sort of the class's few positives gives how
    many of those are positives. Positives are sparse, so the cost is one sort per class.
    """
    score_array = as_score_array(scores)
    target_array = as_target_array(targets, score_array.shape)
    num_videos, num_classes = score_array.shape
    if num_videos == 0 or num_classes == 0:
        return np.full(num_classes, np.nan)

    rows, cols = _nonzero(target_array)
    # Group the positives by class (they come row-major); a stable sort keeps rows ascending within a class.
    order = np.argsort(cols, kind="stable")
    rows, cols = rows[order], cols[order]
    positive_scores = score_array[rows, cols]
    counts = np.bincount(cols, minlength=num_classes)
    starts = np.concatenate(([0], np.cumsum(counts)))

    result = np.full(num_classes, np.nan, dtype=np.float64)
    non_finite = []

    def score_block(first: int) -> None:
        last = min(first + _CLASS_BLOCK, num_classes)
        if not counts[first:last].any():
            if find_non_finite(score_array[:, first:last]) is not None:
                non_finite.append(first)
            return
        block = _class_major(score_array, first, last)
        block.sort(axis=1)
        # Sorted rows hold their minimum first and their maximum (or NaN, sorted last) at the end.
        if not (np.isfinite(block[:, 0]).all() and np.isfinite(block[:, -1]).all()):
            non_finite.append(first)
            return
        for offset, klass in enumerate(range(first, last)):
            positives = counts[klass]
            if positives == 0:
                continue
            values = positive_scores[starts[klass]:starts[klass + 1]]
            at_least = num_videos - np.searchsorted(block[offset], values, side="left")
            positives_at_least = positives - np.searchsorted(np.sort(values), values, side="left")
            result[klass] = float(np.sum(positives_at_least.astype(np.float64) / at_least.astype(np.float64))
                                  / positives)

    threads = num_threads if num_threads is not None else _usable_cpus()
    firsts = range(0, num_classes, _CLASS_BLOCK)
    if threads <= 1 or num_classes <= _CLASS_BLOCK:
        for first in firsts:
            score_block(first)
    else:
        # numpy releases the GIL while copying and sorting, so threads use every core without extra copies.
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(score_block, firsts))
    if non_finite:
        check_finite(score_array)  # raises, naming the first bad score
    return result


def mean_average_precision(per_class_ap: np.ndarray, class_ids: Iterable[int] | None = None) -> MeanAP:
    """Mean of the per-class APs of ``class_ids`` (all classes when None), over the classes that have an AP.

    Classes without an AP (NaN: no positive video) are left out and counted; the mean of zero classes is None.
    """
    ap = np.asarray(per_class_ap, dtype=np.float64)
    ids = np.arange(len(ap)) if class_ids is None else np.asarray(list(class_ids), dtype=np.int64)
    selected = ap[ids]
    evaluated = selected[~np.isnan(selected)]
    value = float(np.mean(evaluated)) if len(evaluated) else None
    return MeanAP(value=value, classes_evaluated=int(len(evaluated)),
                  classes_without_positives=int(len(selected) - len(evaluated)))


def group_mean_average_precision(per_class_ap: np.ndarray,
                                 groups: Mapping[str, Sequence[int] | np.ndarray]) -> dict[str, MeanAP]:
    """:func:`mean_average_precision` for each group of class ids (e.g. a split's ``groups``), in the given order."""
    return {name: mean_average_precision(per_class_ap, ids) for name, ids in groups.items()}


def top_k_hit_accuracy(scores: object, targets: object, ks: Sequence[int] = (1, 5)) -> TopKAccuracy:
    """Share of labelled videos with at least one label among their top k classes, for each k in ``ks``.

    A label is in the top k when at most k classes (the label's own included) score greater than or equal to it, so
    tied scores never count as hits for free (a constant predictor scores 0 whenever there are more than k classes).
    Videos without labels are left out and counted; with no labelled video every accuracy is None.
    """
    score_array = as_score_array(scores)
    target_array = as_target_array(targets, score_array.shape)
    check_finite(score_array)
    if any(int(k) < 1 for k in ks):
        raise MeidBenchError(f"top-k: every k must be >= 1, got {list(ks)}")
    rows, cols = _nonzero(target_array)  # row-major: rows ascending
    labelled = np.unique(rows)
    without = int(score_array.shape[0] - len(labelled))
    if len(rows) == 0:
        return TopKAccuracy(hits={int(k): None for k in ks}, videos_evaluated=0, videos_without_labels=without)
    at_least = np.empty(len(rows), dtype=np.int64)
    for first in range(0, len(rows), _PAIR_BLOCK):
        part_rows, part_cols = rows[first:first + _PAIR_BLOCK], cols[first:first + _PAIR_BLOCK]
        video_scores = score_array[part_rows]
        label_scores = video_scores[np.arange(len(part_rows)), part_cols]
        at_least[first:first + _PAIR_BLOCK] = np.count_nonzero(video_scores >= label_scores[:, None], axis=1)
    # The best-ranked label of each video decides the hit.
    video_starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    best_rank = np.minimum.reduceat(at_least, video_starts)
    hits = {int(k): float(np.mean(best_rank <= int(k))) for k in ks}
    return TopKAccuracy(hits=hits, videos_evaluated=int(len(labelled)), videos_without_labels=without)


def _nonzero(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D 0/1 array, row-major; for a contiguous one-byte array it skips zero bytes eight at a
    time (targets are sparse: ~6x faster than np.nonzero on VideoLT's test size)."""
    if targets.itemsize != 1 or not targets.flags.c_contiguous or targets.size < 8:
        return np.nonzero(targets)
    flat = targets.reshape(-1).view(np.uint8)
    whole = len(flat) // 8 * 8
    words = np.flatnonzero(flat[:whole].view(np.uint64))
    candidates = (words[:, None] * 8 + np.arange(8)).ravel()
    positions = np.concatenate([candidates[flat[candidates] != 0], whole + np.flatnonzero(flat[whole:])])
    return np.divmod(positions, targets.shape[1])


def _class_major(scores: np.ndarray, first: int, last: int) -> np.ndarray:
    """A C-contiguous copy of ``scores[:, first:last].T`` (tiled: a strided copy in one go is ~3x slower)."""
    if scores.flags.f_contiguous:
        return scores[:, first:last].T.copy()
    block = np.empty((last - first, scores.shape[0]), dtype=scores.dtype)
    for start in range(0, scores.shape[0], _TILE_ROWS):
        block[:, start:start + _TILE_ROWS] = scores[start:start + _TILE_ROWS, first:last].T
    return block


def _to_numpy(value: object) -> np.ndarray:
    module = type(value).__module__
    if module.startswith("torch"):
        tensor = value.detach().cpu()  # type: ignore[attr-defined]
        if str(tensor.dtype) in ("torch.bfloat16", "torch.float16"):
            tensor = tensor.float()  # numpy has no bfloat16; float32 holds both exactly
        return tensor.numpy()
    return np.asarray(value)


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
