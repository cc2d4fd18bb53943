"""A linear probe: how much class information a feature store carries, before any model is trained.

Mean-pools each video's frames, standardises with training statistics, fits one-vs-rest ridge regression on
{-1, +1} targets (closed form, deterministic) and reports per-class average precision on the evaluation subset,
with the chance level (each class's positive rate) beside it. Numpy only: a check, not a benchmark metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meid_bench.errors import MeidBenchError


def mean_pooled(store: Any, video_ids: Any) -> np.ndarray:
    """[videos, dim] float64 mean of each video's frames; a video holding NaN or infinity is an error."""
    ids = list(video_ids)
    pooled = np.stack([store.read(v).astype(np.float64).mean(axis=0) for v in ids])
    bad = np.flatnonzero(~np.isfinite(pooled).all(axis=1))
    if len(bad):
        raise MeidBenchError(f"{store.path}: video {ids[bad[0]]!r} holds NaN or infinite values (features must be "
                             "finite); pack or simulate the features again")
    return pooled


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class (ties broken by order); NaN when the class has no positive."""
    count = int(positives.sum())
    if count == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(bool)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / count)


def linear_probe(split: Any, store: Any, train_subset: str = "train", eval_subset: str = "test",
                 ridge: float = 1.0) -> dict[str, Any]:
    """Fit on ``train_subset``, score ``eval_subset``. Returns per-class AP and chance, and their mean per group
    (classes without an evaluation positive are left out and counted)."""
    train_ids = list(split.table(train_subset)["video_id"])
    eval_ids = list(split.table(eval_subset)["video_id"])
    if not train_ids or not eval_ids:
        raise MeidBenchError(f"{split.path}: the probe needs videos in {train_subset} and {eval_subset}")
    x_train, x_eval = mean_pooled(store, train_ids), mean_pooled(store, eval_ids)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    x_train, x_eval = (x_train - mean) / std, (x_eval - mean) / std
    y_train = split.multi_hot(train_subset).astype(np.float64) * 2 - 1
    y_eval = split.multi_hot(eval_subset)
    x_train = np.hstack([x_train, np.ones((len(x_train), 1))])
    x_eval = np.hstack([x_eval, np.ones((len(x_eval), 1))])
    gram = x_train.T @ x_train + ridge * np.eye(x_train.shape[1])
    weights = np.linalg.solve(gram, x_train.T @ y_train)
    scores = x_eval @ weights
    ap = np.array([average_precision(scores[:, c], y_eval[:, c]) for c in range(split.num_classes)])
    chance = y_eval.mean(axis=0).astype(np.float64)
    chance[np.isnan(ap)] = np.nan
    result: dict[str, Any] = {"ap": ap, "chance": chance, "evaluated": int(np.isfinite(ap).sum())}
    for group, ids in split.groups.items():
        values, base = ap[ids], chance[ids]
        keep = np.isfinite(values)
        result[f"mAP_{group}"] = float(values[keep].mean()) if keep.any() else float("nan")
        result[f"chance_{group}"] = float(base[keep].mean()) if keep.any() else float("nan")
    keep = np.isfinite(ap)
    result["mAP"] = float(ap[keep].mean()) if keep.any() else float("nan")
    result["chance"] = float(chance[keep].mean()) if keep.any() else float("nan")
    result["chance_per_class"] = chance
    return result
