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

Labels stay ragged (``label_offsets``, ``label_values``): a sum over each video's labels is one ``np.bincount``
over the label entries, in the entries' order, so the sums, and the selection, are exactly those of a sparse
matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMPTY_PENALTY = 1.0e6  # J for a class with no video: never worth it


@dataclass
class Selection:
    selected: np.ndarray  # bool [V]
    counts: np.ndarray  # int64 [C], kept videos per class
    moves: int  # local-search moves applied


def label_counts(label_offsets: np.ndarray, label_values: np.ndarray, chosen: np.ndarray, num_classes: int
                 ) -> np.ndarray:
    """Videos per class among the videos ``chosen`` (bool [videos]) of a ragged label list."""
    rows = np.flatnonzero(chosen)
    return np.bincount(label_values[_flat_rows(label_offsets, rows)], minlength=num_classes).astype(np.int64)


def _row_sums(owners: np.ndarray, classes: np.ndarray, per_class: np.ndarray, rows: int) -> np.ndarray:
    """For each row, the sum of ``per_class`` over its label entries (``owners[i]`` is the row of entry i)."""
    return np.bincount(owners, weights=per_class[classes], minlength=rows)


def _cost(counts: np.ndarray, log_targets: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = (np.log(counts) - log_targets) ** 2
    return np.where(counts <= 0, EMPTY_PENALTY, cost)


def _flat_rows(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Flat positions of the ragged rows ``rows``."""
    lengths = offsets[rows + 1] - offsets[rows]
    starts = np.repeat(offsets[rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return starts + np.arange(lengths.sum())


class _CostSteps:
    """For every class and every count it can reach, the change in ``_cost`` of one video more (``up``) or one
    less (``down``), computed once as ``_cost(c +/- 1) - _cost(c)``: the search looks them up instead of taking
    logarithms move by move (the same values, from elementwise the same operations)."""

    def __init__(self, log_targets: np.ndarray, max_count: int) -> None:
        counts = np.arange(0, max_count + 1)[None, :]
        now = _cost(counts, log_targets[:, None])
        self.up = _cost(counts + 1, log_targets[:, None]) - now
        self.down = _cost(counts - 1, log_targets[:, None]) - now
        self.classes = np.arange(len(log_targets))


def select_videos(label_offsets: np.ndarray, label_values: np.ndarray, targets: np.ndarray, seed: int,
                  max_moves: int = 20000, batch: int = 64) -> Selection:
    """Choose the subset of videos whose per-class counts come closest to ``targets`` (see module doc)."""
    num_videos, num_classes = len(label_offsets) - 1, len(targets)
    lengths = np.diff(label_offsets)
    owners = np.repeat(np.arange(num_videos), lengths)  # the video of each label entry
    eligible = lengths > 0
    log_targets = np.log(targets)
    tie_break = np.random.default_rng(seed).random(num_videos) * 1e-9

    selected = np.zeros(num_videos, dtype=bool)
    counts = np.zeros(num_classes, dtype=np.int64)
    steps = _CostSteps(log_targets, int(np.bincount(label_values, minlength=1).max()))
    classes = steps.classes

    # 1. Tail-first fill. A class below its goal takes the unselected videos of that class that lower J the most;
    # they are taken half of the remaining need at a time, with the gains recomputed in between, since every
    # addition changes the gains of the classes it touches.
    by_class = owners[np.argsort(label_values, kind="stable")]  # each class's videos, consecutive, in order
    class_starts = np.concatenate([[0], np.cumsum(np.bincount(label_values, minlength=num_classes))])
    for k in np.lexsort((np.arange(num_classes), targets)):
        goal = max(1, int(round(targets[k])))
        if counts[k] >= goal:
            continue
        candidates = by_class[class_starts[k]:class_starts[k + 1]]
        candidates = candidates[~selected[candidates]]
        # The candidates' label entries, gathered once per class; each round re-weighs those still unselected.
        entries = label_values[_flat_rows(label_offsets, candidates)]
        entry_rows = np.repeat(np.arange(len(candidates)), lengths[candidates])
        alive = np.arange(len(candidates))
        taken = np.zeros(len(candidates), dtype=bool)
        ties = tie_break[candidates]
        while counts[k] < goal and len(alive):
            take = min(len(alive), max(1, (goal - counts[k] + 1) // 2))
            if take == len(alive):  # every candidate goes in: their order does not matter
                order = np.arange(take)
            else:
                gain = _row_sums(entry_rows, entries, steps.up[classes, counts], len(candidates))[alive] + ties[alive]
                order = np.argsort(gain, kind="stable")
            chosen = alive[order[:take]]
            selected[candidates[chosen]] = True
            taken[:] = False
            taken[chosen] = True
            counts += np.bincount(entries[taken[entry_rows]], minlength=num_classes)
            alive = alive[np.sort(order[take:])]

    # 2. Local search: rounds of improving additions / removals. Each round ranks the moves by their gain, then
    # walks that list and applies a move only if its gain, recomputed on the counts as they are now, still lowers
    # J; so J strictly decreases and the search stops at a local minimum (no single move improves).
    never = ~eligible
    moves = 0
    # Per label entry, where its video's move change sits in [up changes; down changes] of the current counts: a
    # selected video's entries point at "down" (its move is a removal). Kept up to date move by move.
    key = label_values + num_classes * selected[owners]
    offsets = label_offsets.tolist()
    # Flat views of the step tables, and each label entry's row in them: one take per looked-up move.
    up_flat, down_flat = steps.up.ravel(), steps.down.ravel()
    flat_rows = label_values.astype(np.int64) * steps.up.shape[1]
    while moves < max_moves:
        changes = np.concatenate([steps.up[classes, counts], steps.down[classes, counts]])
        gain = np.bincount(owners, weights=changes.take(key), minlength=num_videos) + tie_break
        gain[never] = np.inf
        improving = np.flatnonzero(gain < -1e-9)
        if len(improving) == 0:
            break
        if len(improving) > batch:
            improving = improving[np.argpartition(gain[improving], batch)[:batch]]
        for video in improving[np.argsort(gain[improving], kind="stable")].tolist():
            start, end = offsets[video], offsets[video + 1]
            touched = label_values[start:end]
            removing = selected[video]
            at = counts.take(touched)
            fresh = np.add.reduce((down_flat if removing else up_flat).take(flat_rows[start:end] + at))
            if fresh >= -1e-9:
                continue
            counts[touched] = at + (-1 if removing else 1)
            selected[video] = not removing
            key[start:end] += -num_classes if removing else num_classes
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
