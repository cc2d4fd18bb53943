"""Multi-label long-tail selection: which original training videos to keep so that per-class counts follow targets.

A kept video brings all of its labels, so exact targets are infeasible; the selection minimises

    J(S) = sum_k log(a_k(S) / t_k)^2        (a_k = kept videos with class k, t_k = target; a_k = 0 is forbidden)

in two seeded, deterministic steps (``docs/protocol.md`` states them for readers):

1. Tail-first fill. Classes are visited from the smallest target up. While a class is below its (rounded) target,
   add the unselected video of that class whose addition lowers J the most (a lazy greedy over a heap), so tail
   classes are filled first and later additions avoid classes that are already full.
2. Local search. Repeatedly apply the single addition or removal of a video that lowers J the most, until none
   does (or ``max_moves``).

Ties are broken by a per-video random key drawn from the seed; that is the only use of randomness.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from scipy import sparse

EMPTY_PENALTY = 1.0e6  # J for a class with no video: never worth it


@dataclass
class Selection:
    selected: np.ndarray  # bool [V]
    counts: np.ndarray  # int64 [C], kept videos per class
    moves: int  # local-search moves applied


def label_matrix(label_offsets: np.ndarray, label_values: np.ndarray, num_classes: int) -> sparse.csr_matrix:
    """The [videos, classes] 0/1 matrix of a ragged label list."""
    data = np.ones(len(label_values), dtype=np.float64)
    return sparse.csr_matrix((data, label_values, label_offsets), shape=(len(label_offsets) - 1, num_classes))


def _cost(counts: np.ndarray, log_targets: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        cost = (np.log(counts) - log_targets) ** 2
    return np.where(counts <= 0, EMPTY_PENALTY, cost)


def select_videos(label_offsets: np.ndarray, label_values: np.ndarray, targets: np.ndarray, seed: int,
                  max_moves: int = 20000) -> Selection:
    """Choose the subset of videos whose per-class counts come closest to ``targets`` (see module doc)."""
    num_videos, num_classes = len(label_offsets) - 1, len(targets)
    matrix = label_matrix(label_offsets, label_values, num_classes)
    eligible = np.diff(label_offsets) > 0
    log_targets = np.log(targets)
    tie_break = np.random.default_rng(seed).random(num_videos) * 1e-9

    selected = np.zeros(num_videos, dtype=bool)
    counts = np.zeros(num_classes, dtype=np.int64)
    gain_add = _cost(counts + 1, log_targets) - _cost(counts, log_targets)

    def labels(video: int) -> np.ndarray:
        return label_values[label_offsets[video]:label_offsets[video + 1]]

    # 1. Tail-first fill with a lazy greedy per class.
    columns = matrix.tocsc()
    for k in np.lexsort((np.arange(num_classes), targets)):
        goal = max(1, int(round(targets[k])))
        if counts[k] >= goal:
            continue
        candidates = columns.indices[columns.indptr[k]:columns.indptr[k + 1]]
        candidates = candidates[~selected[candidates]]
        delta = matrix[candidates] @ gain_add + tie_break[candidates]
        heap = list(zip(delta.tolist(), candidates.tolist()))
        heapq.heapify(heap)
        while counts[k] < goal and heap:
            stale, video = heapq.heappop(heap)
            fresh = float(gain_add[labels(video)].sum()) + tie_break[video]
            if heap and fresh > heap[0][0] + 1e-12:
                heapq.heappush(heap, (fresh, video))
                continue
            selected[video] = True
            touched = labels(video)
            counts[touched] += 1
            gain_add[touched] = _cost(counts[touched] + 1, log_targets[touched]) - _cost(counts[touched],
                                                                                            log_targets[touched])

    # 2. Local search: best single addition or removal while it lowers J. A move changes the counts of its
    # video's classes only, so the move gains are updated through those classes' columns, not recomputed.
    cost_now = _cost(counts, log_targets)
    gain_add = _cost(counts + 1, log_targets) - cost_now
    gain_remove = _cost(counts - 1, log_targets) - cost_now
    add = matrix @ gain_add + tie_break
    remove = matrix @ gain_remove + tie_break
    never = ~eligible
    moves = 0
    while moves < max_moves:
        add_masked = np.where(selected | never, np.inf, add)
        remove_masked = np.where(selected, remove, np.inf)
        best_add, best_remove = int(np.argmin(add_masked)), int(np.argmin(remove_masked))
        if min(add_masked[best_add], remove_masked[best_remove]) >= -1e-9:
            break
        video = best_add if add_masked[best_add] <= remove_masked[best_remove] else best_remove
        touched = labels(video)
        counts[touched] += 1 if video == best_add else -1
        selected[video] = video == best_add
        cost_touched = _cost(counts[touched], log_targets[touched])
        new_add = _cost(counts[touched] + 1, log_targets[touched]) - cost_touched
        new_remove = _cost(counts[touched] - 1, log_targets[touched]) - cost_touched
        for k, change_add, change_remove in zip(touched, new_add - gain_add[touched],
                                                new_remove - gain_remove[touched]):
            rows = columns.indices[columns.indptr[k]:columns.indptr[k + 1]]
            add[rows] += change_add
            remove[rows] += change_remove
        gain_add[touched], gain_remove[touched] = new_add, new_remove
        moves += 1
    return Selection(selected=selected, counts=counts, moves=moves)


def fidelity(counts: np.ndarray, targets: np.ndarray, imbalance: float) -> dict:
    """How close achieved counts come to the targets: achieved IF and |log(achieved / target)| statistics."""
    log_ratio = np.abs(np.log(np.maximum(counts, 1e-12) / targets))
    achieved = float(counts.max() / max(counts.min(), 1))
    return {
        "requested_imbalance": float(imbalance),
        "achieved_imbalance": achieved,
        "imbalance_relative_error": abs(achieved - imbalance) / imbalance,
        "abs_log_ratio_median": float(np.median(log_ratio)),
        "abs_log_ratio_p90": float(np.percentile(log_ratio, 90)),
        "abs_log_ratio_max": float(log_ratio.max()),
        "classes_within_10_percent": int((log_ratio <= np.log(1.1)).sum()),
    }
