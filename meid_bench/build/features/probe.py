"""A linear probe: how much class information a feature store carries, before any model is trained.

Mean-pools each video's frames, standardises with training statistics, fits one-vs-rest ridge regression on
{-1, +1} targets (closed form, deterministic) and reports per-class average precision on the evaluation subset,
with the chance level (each class's positive rate) beside it. Numpy only: a check, not a benchmark metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meid_bench.build.features.frames import frame_times
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


def ridge_scores(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, ridge: float) -> np.ndarray:
    """Scores of ``x_eval`` from ridge regression on ``(x_fit, y_fit)`` (closed form, with a bias), after
    standardising both with ``x_fit``'s statistics."""
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-6
    x_fit = np.hstack([(x_fit - mean) / std, np.ones((len(x_fit), 1))])
    x_eval = np.hstack([(x_eval - mean) / std, np.ones((len(x_eval), 1))])
    weights = np.linalg.solve(x_fit.T @ x_fit + ridge * np.eye(x_fit.shape[1]), x_fit.T @ y_fit)
    return x_eval @ weights


def linear_probe(split: Any, store: Any, train_subset: str = "train", eval_subset: str = "test",
                 ridge: float = 1.0) -> dict[str, Any]:
    """Fit on ``train_subset``, score ``eval_subset``. Returns per-class AP and chance, and their mean per group
    (classes without an evaluation positive are left out and counted)."""
    train_ids = list(split.table(train_subset)["video_id"])
    eval_ids = list(split.table(eval_subset)["video_id"])
    if not train_ids or not eval_ids:
        raise MeidBenchError(f"{split.path}: the probe needs videos in {train_subset} and {eval_subset}")
    y_train = split.multi_hot(train_subset).astype(np.float64) * 2 - 1
    y_eval = split.multi_hot(eval_subset)
    scores = ridge_scores(mean_pooled(store, train_ids), y_train, mean_pooled(store, eval_ids), ridge)
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


def mirrored_pairs_of(store: Any, class_keys: list[str], annotations: Any = None, required: bool = True
                      ) -> list[tuple[str, str]] | None:
    """Mirrored class-key pairs (same object, opposite verbs): from a Charades annotation folder when given, else
    those a simulator-v2 store records. A store that records none (simulator v1, extracted features) without
    ``annotations`` is an error when the pairs are ``required``, else None."""
    if annotations is not None:
        from meid_bench.build.features.synth_v2 import read_class_structure

        return list(read_class_structure(annotations, class_keys).mirrored_pairs(class_keys))
    import json

    named = [tuple(pair) for pair in json.loads(store.attrs.get("params", "{}") or "{}").get("mirrored_pairs", [])]
    if not named:
        if not required:
            return None
        raise MeidBenchError(f"{store.path}: records no mirrored class pairs (not a simulator-v2 store); pass "
                             "--annotations DIR, the Charades folder with the class mapping and verb files")
    return named  # type: ignore[return-value]


def segment_descriptors(store: Any, table: Any, classes: set[int], alone: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every annotated segment of a class in ``classes`` with at least two stored frames: the class, the mean of
    its frames, and the mean of its second half minus the mean of its first half. Frames belong to a segment as in
    the simulator (frame centre times at the store's frame rate, or spread over the video's duration). ``alone``
    keeps only the segment's frames on which no other class is active (from the store's per-frame labels), so that
    the order of co-occurring actions cannot tell anything."""
    if alone and not store.has_frame_labels:
        raise MeidBenchError(f"{store.path}: holds no per-frame labels, which frames of one class alone need; "
                             "synthesise or pack the store with --frame-labels")
    labels, means, halves = [], [], []
    fps = store.fps
    for video in table.itertuples(index=False):
        wanted = [i for i, c in enumerate(video.segment_classes) if int(c) in classes]
        if not wanted:
            continue
        position = store.index_of(video.video_id)
        frames = store.read_at(position).astype(np.float64)
        busy = store.read_frame_labels_at(position).astype(bool).sum(axis=1) if alone else None
        times = frame_times(len(frames), fps, float(video.duration) if video.duration == video.duration else None)
        for i in wanted:
            lo = int(np.searchsorted(times, video.segment_starts[i], side="left"))
            hi = int(np.searchsorted(times, video.segment_ends[i], side="left"))
            rows = np.arange(lo, hi) if busy is None else lo + np.flatnonzero(busy[lo:hi] == 1)
            if len(rows) < 2:
                continue
            segment = frames[rows]
            middle = len(segment) // 2
            labels.append(int(video.segment_classes[i]))
            means.append(segment.mean(axis=0))
            halves.append(segment[middle:].mean(axis=0) - segment[:middle].mean(axis=0))
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros((0, store.dim)), np.zeros((0, store.dim))
    return np.array(labels), np.stack(means), np.stack(halves)


def mirrored_pair_probe(split: Any, store: Any, pairs: list[tuple[str, str]], train_subset: str = "train",
                        eval_subset: str = "test", ridge: float = 1.0, alone: bool = False) -> dict[str, Any]:
    """Can a linear probe tell the two classes of a mirrored pair apart from the frames of one of their segments?

    Two descriptors of the same size per segment: order-blind [mean, |second half - first half|] (unchanged when
    the segment is played backwards) and order-aware [mean, second half - first half]. One ridge classifier per
    pair and descriptor (a's segments against b's, standardised with training statistics); AP of telling a from b
    and b from a on ``eval_subset``, averaged over both directions and over the pairs with evaluation segments of
    both classes. When the two classes differ only in temporal order (simulator v2), only the order-aware probe
    beats chance; when their frames differ (simulator v1, real features), both do, and equally when nothing about
    order tells them apart. ``order_gain``: order-aware minus order-blind AP, mean over the pairs with its 95%
    t-interval over pairs (``order_gain_ci95``). ``alone``: see :func:`segment_descriptors`.
    """
    keys = [str(k) for k in split.classes["class_key"]]
    index = {key: i for i, key in enumerate(keys)}
    pairs_idx = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    if not pairs_idx:
        raise MeidBenchError(f"{split.path}: none of the {len(pairs)} mirrored pairs has both classes in the split")
    classes = {c for pair in pairs_idx for c in pair}
    train = segment_descriptors(store, split.table(train_subset), classes, alone)
    test = segment_descriptors(store, split.table(eval_subset), classes, alone)
    results: dict[str, list[float]] = {"order_blind": [], "order_aware": [], "chance": []}
    for a, b in pairs_idx:
        fit = np.isin(train[0], (a, b))
        score = np.isin(test[0], (a, b))
        is_a_fit, is_a = train[0][fit] == a, test[0][score] == a
        if is_a_fit.all() or not is_a_fit.any() or is_a.all() or not is_a.any():
            continue
        for name, transform in (("order_blind", np.abs), ("order_aware", lambda x: x)):
            s = ridge_scores(np.hstack([train[1][fit], transform(train[2][fit])]), np.where(is_a_fit, 1.0, -1.0),
                             np.hstack([test[1][score], transform(test[2][score])]), ridge)
            results[name].append((average_precision(s, is_a) + average_precision(-s, ~is_a)) / 2)
        results["chance"].append((is_a.mean() + (~is_a).mean()) / 2)
    if not results["chance"]:
        raise MeidBenchError(f"{split.path}: no mirrored pair has segments of both classes in {train_subset} and "
                             f"{eval_subset}")
    gain = np.array(results["order_aware"]) - np.array(results["order_blind"])
    return {"pairs": len(gain), **{k: float(np.mean(v)) for k, v in results.items()},
            "order_gain": float(gain.mean()), "order_gain_ci95": _t_interval(gain)}


WHOLE_VIDEO_FRAMES = 60  # frames per video of the whole-video probe: the reduced-scale evaluation's eval_frames


def whole_video_descriptors(store: Any, video_ids: Any, num_frames: int = WHOLE_VIDEO_FRAMES
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Per video, from ``num_frames`` evenly spaced frames (the evaluation's rule, frame floor((k + 0.5) T / n);
    repeats in short videos): the mean, and the mean of the second half minus the mean of the first half."""
    means, halves = [], []
    middle = num_frames // 2
    for video_id in video_ids:
        frames = store.read(video_id)
        picked = np.floor((np.arange(num_frames) + 0.5) * (len(frames) / num_frames)).astype(np.int64)
        chosen = frames[picked].astype(np.float64)
        means.append(chosen.mean(axis=0))
        halves.append(chosen[middle:].mean(axis=0) - chosen[:middle].mean(axis=0))
    return np.stack(means), np.stack(halves)


def whole_video_pair_probe(split: Any, store: Any, pairs: list[tuple[str, str]], train_subset: str = "train",
                           eval_subset: str = "test", ridge: float = 1.0,
                           num_frames: int = WHOLE_VIDEO_FRAMES) -> dict[str, Any]:
    """The mirrored-pair control at the level a video model works at: no segment boundaries.

    Each video is described by ``num_frames`` evenly spaced frames (as a model is evaluated); per pair, a ridge
    classifier on the videos labelled with exactly one of the two classes (the videos the models' pair AP is
    measured on, meid_bench.diagnose) from three descriptors: mean-only [mean], order-blind [mean, |second half -
    first half|] and order-aware [mean, second half - first half]. AP both ways, averaged over the pairs with
    videos of both classes in both subsets. What the order-aware descriptor reaches is a ceiling for a video-level
    model that pools a mean and one half contrast (per pair, with the pair's own classifier); ``order_gain`` is
    order-aware minus order-blind AP with its 95% t-interval over pairs.
    """
    keys = [str(k) for k in split.classes["class_key"]]
    index = {key: i for i, key in enumerate(keys)}
    pairs_idx = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    if not pairs_idx:
        raise MeidBenchError(f"{split.path}: none of the {len(pairs)} mirrored pairs has both classes in the split")
    subsets = {}
    for subset in (train_subset, eval_subset):
        targets = split.multi_hot(subset)
        ids = list(split.table(subset)["video_id"])
        wanted = sorted({v for a, b in pairs_idx for v in np.flatnonzero(targets[:, a] != targets[:, b])})
        means, halves = whole_video_descriptors(store, [ids[v] for v in wanted], num_frames) if wanted else \
            (np.zeros((0, store.dim)), np.zeros((0, store.dim)))
        subsets[subset] = (targets[wanted], means, halves)
    results: dict[str, list[float]] = {"mean_only": [], "order_blind": [], "order_aware": [], "chance": []}
    descriptors = (("mean_only", lambda m, h: m), ("order_blind", lambda m, h: np.hstack([m, np.abs(h)])),
                   ("order_aware", lambda m, h: np.hstack([m, h])))
    for a, b in pairs_idx:
        (fit_y, fit_m, fit_h), (eval_y, eval_m, eval_h) = subsets[train_subset], subsets[eval_subset]
        fit = (fit_y[:, a] > 0) != (fit_y[:, b] > 0)
        score = (eval_y[:, a] > 0) != (eval_y[:, b] > 0)
        is_a_fit, is_a = fit_y[fit, a] > 0, eval_y[score, a] > 0
        if is_a_fit.all() or not is_a_fit.any() or is_a.all() or not is_a.any():
            continue
        for name, describe in descriptors:
            s = ridge_scores(describe(fit_m[fit], fit_h[fit]), np.where(is_a_fit, 1.0, -1.0),
                             describe(eval_m[score], eval_h[score]), ridge)
            results[name].append((average_precision(s, is_a) + average_precision(-s, ~is_a)) / 2)
        results["chance"].append((is_a.mean() + (~is_a).mean()) / 2)
    if not results["chance"]:
        raise MeidBenchError(f"{split.path}: no mirrored pair has videos of only one of its classes, of both "
                             f"classes, in {train_subset} and {eval_subset}")
    gain = np.array(results["order_aware"]) - np.array(results["order_blind"])
    return {"pairs": len(gain), **{k: float(np.mean(v)) for k, v in results.items()},
            "order_gain": float(gain.mean()), "order_gain_ci95": _t_interval(gain)}


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% t-interval of the mean of ``values`` (NaN for fewer than two)."""
    from scipy.stats import t as student_t

    if len(values) < 2:
        return float("nan"), float("nan")
    half = float(student_t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return float(values.mean() - half), float(values.mean() + half)
