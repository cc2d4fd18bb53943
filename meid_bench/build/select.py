"""Multi-label long-tail selection: which original training videos to keep so that per-class counts follow targets.

A kept video brings all of its labels, so exact targets are infeasible; the selection minimises

    J(S) = sum_k log(a_k(S) / t_k)^2        (a_k = kept videos with class k, t_k = target; a_k = 0 is forbidden)

in two seeded, deterministic steps (``docs/protocol.md`` states them for readers):

1. Tail-first fill. Classes are visited from the smallest target up. While a class is below its (rounded) target,
   add the unselected videos of that class whose addition lowers J the most (half the remaining need at a time,
   gains recomputed in between), so tail classes are filled first and later additions avoid full classes.
2. Local search. In rounds: rank all single additions / removals by their gain in J, walk the best ``batch`` of
   them and apply each one whose gain, recomputed on the current counts, is still negative; stop when no single
   move lowers J (a local minimum) or after ``max_moves``.

Ties are broken by a per-video random key drawn from the seed; that is the only use of randomness.
"""

from __future__ import annotations

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


def _flat_rows(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Flat positions of the ragged rows ``rows``."""
    lengths = offsets[rows + 1] - offsets[rows]
    starts = np.repeat(offsets[rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return starts + np.arange(lengths.sum())


def select_videos(label_offsets: np.ndarray, label_values: np.ndarray, targets: np.ndarray, seed: int,
                  max_moves: int = 20000, batch: int = 64) -> Selection:
    """Choose the subset of videos whose per-class counts come closest to ``targets`` (see module doc)."""
    num_videos, num_classes = len(label_offsets) - 1, len(targets)
    matrix = label_matrix(label_offsets, label_values, num_classes)
    eligible = np.diff(label_offsets) > 0
    log_targets = np.log(targets)
    tie_break = np.random.default_rng(seed).random(num_videos) * 1e-9

    selected = np.zeros(num_videos, dtype=bool)
    counts = np.zeros(num_classes, dtype=np.int64)

    def labels(video: int) -> np.ndarray:
        return label_values[label_offsets[video]:label_offsets[video + 1]]

    # 1. Tail-first fill. A class below its goal takes the unselected videos of that class that lower J the most;
    # they are taken half of the remaining need at a time, with the gains recomputed in between, since every
    # addition changes the gains of the classes it touches.
    columns = matrix.tocsc()
    for k in np.lexsort((np.arange(num_classes), targets)):
        goal = max(1, int(round(targets[k])))
        if counts[k] >= goal:
            continue
        candidates = columns.indices[columns.indptr[k]:columns.indptr[k + 1]]
        candidates = candidates[~selected[candidates]]
        rows = matrix[candidates]  # sliced once per class; the rounds below only re-weigh it
        while counts[k] < goal and len(candidates):
            gain_add = _cost(counts + 1, log_targets) - _cost(counts, log_targets)
            gain = rows @ gain_add + tie_break[candidates]
            take = min(len(candidates), max(1, (goal - counts[k] + 1) // 2))
            order = np.argsort(gain, kind="stable")
            chosen = candidates[order[:take]]
            selected[chosen] = True
            counts += np.bincount(label_values[_flat_rows(label_offsets, chosen)], minlength=num_classes)
            rest = np.sort(order[take:])
            candidates, rows = candidates[rest], rows[rest]

    # 2. Local search: rounds of improving additions / removals. Each round ranks the moves by their gain, then
    # walks that list and applies a move only if its gain, recomputed on the counts as they are now, still lowers
    # J; so J strictly decreases and the search stops at a local minimum (no single move improves).
    never = ~eligible
    moves = 0
    while moves < max_moves:
        cost_now = _cost(counts, log_targets)
        add = matrix @ (_cost(counts + 1, log_targets) - cost_now)
        remove = matrix @ (_cost(counts - 1, log_targets) - cost_now)
        gain = np.where(selected, remove, add) + tie_break
        gain[never] = np.inf
        improving = np.flatnonzero(gain < -1e-9)
        if len(improving) == 0:
            break
        if len(improving) > batch:
            improving = improving[np.argpartition(gain[improving], batch)[:batch]]
        for video in improving[np.argsort(gain[improving], kind="stable")]:
            touched = labels(video)
            step = -1 if selected[video] else 1
            before = counts[touched]
            fresh = (_cost(before + step, log_targets[touched]) - _cost(before, log_targets[touched])).sum()
            if fresh >= -1e-9:
                continue
            counts[touched] += step
            selected[video] = not selected[video]
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
