"""Statistical inference for paired comparisons: intervals that hold both sources of noise, equivalence tests for
null claims, and a multiplicity adjustment per table.

A difference between two methods on one benchmark moves for two reasons: the seeds (initialisation, batch order)
and the test set, a sample of videos another sample would replace. The paired t-interval over seeds
(:func:`meid_bench.report.paired.t_interval`) holds only the first. Here:

* **Test-set noise** by a paired bootstrap over test videos: replicate b draws the test videos with replacement
  (the same draw for every run of the split, so differences stay paired on videos), and every run's mAP (overall
  and per group) is recomputed on that draw (:class:`WeightedAP`, exactly the evaluation's AP with each video
  counted as often as it was drawn). The test-set standard error of a difference is the standard deviation over
  replicates of the mean over seeds of the per-seed differences.
* **Seed noise**: sd / sqrt(n) of the n per-seed differences on the real test set.
* **Combined**: se = sqrt(se_seed^2 + se_test^2), degrees of freedom by Welch-Satterthwaite,
  nu = (n - 1) (se / se_seed)^4, and the 95% interval mean +- t(0.975, nu) se. One seed gives no interval.
* **Equivalence**: two one-sided tests (TOST) against a stated margin per metric (:data:`MARGINS_PP`); equivalent
  when both one-sided p-values are below alpha, i.e. the 90% interval lies inside (-margin, +margin).
* **Multiplicity**: within one table (one split and one reference method: every method and metric in it), the
  p-values of the difference tests and those of the equivalence tests are each adjusted by Holm's step-down method.
* **Verdict** per difference: ``different`` (adjusted p of the difference < alpha), else ``equivalent`` (adjusted
  TOST p < alpha), else ``inconclusive``; ``n/a`` without an interval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from meid_bench.build.split_io import GROUPS

ALPHA = 0.05
# Equivalence margins in percentage points: a difference inside them is too small to matter for the claim. The
# group margins are wider because a group mean over fewer classes moves more (the tail most).
MARGINS_PP = {"mAP": 0.5, "mAP_head": 1.0, "mAP_medium": 1.0, "mAP_tail": 1.5}
DEFAULT_BOOTSTRAP = 500  # replicates: the standard error's own relative error is about 1 / sqrt(2 B), 3%
VERDICTS = ("different", "equivalent", "inconclusive", "n/a")

logger = logging.getLogger(__name__)


class WeightedAP:
    """Per-class AP of one run's scores with each video counted ``weights[i]`` times (a bootstrap draw).

    AP is the evaluation's (scikit-learn's): the mean over positives i of #{positives scoring >= s_i} /
    #{videos scoring >= s_i}, tied scores entering together. A video drawn k times is k tied copies, so with
    integer weights this equals that AP on the data set with each video repeated; with all weights 1 it is the
    evaluation's AP. Each class is sorted once here; a draw then costs cumulative sums only.
    """

    def __init__(self, scores: np.ndarray, targets: np.ndarray) -> None:
        scores = np.asarray(scores)
        targets = np.asarray(targets).astype(bool)
        if scores.shape != targets.shape or scores.ndim != 2:
            raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be the same [videos, classes]")
        columns = np.ascontiguousarray(scores.T)  # [C, N]
        self.order = np.argsort(-columns, axis=1, kind="stable")
        ranked = np.take_along_axis(columns, self.order, axis=1)
        self.positive = np.take_along_axis(np.ascontiguousarray(targets.T), self.order, axis=1)
        # Each position's last tied position: everything scoring >= s_i is counted up to there.
        n = ranked.shape[1]
        last = np.empty(ranked.shape, dtype=np.int64)
        for c in range(ranked.shape[0]):
            starts = np.flatnonzero(np.concatenate(([True], ranked[c, 1:] != ranked[c, :-1])))
            ends = np.concatenate((starts[1:], [n])) - 1
            last[c] = np.repeat(ends, np.diff(np.concatenate((starts, [n]))))
        self.last = last

    def per_class(self, weights: np.ndarray) -> np.ndarray:
        """Float64 [C] AP with video i counted ``weights[i]`` times; NaN for a class without a drawn positive."""
        drawn = np.asarray(weights, dtype=np.float64)[self.order]  # [C, N] in each class's rank order
        positive = drawn * self.positive
        cum_positive = np.take_along_axis(np.cumsum(positive, axis=1), self.last, axis=1)
        cum_all = np.take_along_axis(np.cumsum(drawn, axis=1), self.last, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(cum_all > 0, cum_positive / np.where(cum_all > 0, cum_all, 1.0), 0.0)
            total = positive.sum(axis=1)
            return np.where(total > 0, (positive * precision).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)


def group_means_pct(ap: np.ndarray, groups: Mapping[str, Sequence[int] | np.ndarray]) -> np.ndarray:
    """[mAP, mAP_head, mAP_medium, mAP_tail] in percent from per-class AP (NaN classes left out, as evaluated)."""
    out = [np.nanmean(ap) if np.isfinite(ap).any() else np.nan]
    for name in GROUPS:
        part = ap[np.asarray(groups[name], dtype=np.int64)] if len(groups[name]) else np.array([np.nan])
        out.append(np.nanmean(part) if np.isfinite(part).any() else np.nan)
    return 100.0 * np.asarray(out, dtype=np.float64)


def bootstrap_weights(num_videos: int, replicate: int, seed: int = 0) -> np.ndarray:
    """Replicate ``replicate``'s draw of ``num_videos`` test videos with replacement, as counts per video. Each
    replicate has its own generator, so a report's figures do not depend on the order runs are read in."""
    rng = np.random.default_rng([int(seed), int(replicate), 0x7E57])
    return np.bincount(rng.integers(0, num_videos, num_videos), minlength=num_videos)


def replicate_metrics(scores: np.ndarray, targets: np.ndarray, groups: Mapping[str, Sequence[int] | np.ndarray],
                      replicates: int, seed: int = 0) -> np.ndarray:
    """[replicates, 4] metrics (percent, :func:`group_means_pct` order) of one run on each bootstrap draw."""
    ap = WeightedAP(scores, targets)
    num_videos = np.asarray(scores).shape[0]
    with np.errstate(all="ignore"):
        return np.stack([group_means_pct(ap.per_class(bootstrap_weights(num_videos, b, seed)), groups)
                         for b in range(replicates)]) if replicates else np.empty((0, 4))


def combined_interval(differences: Sequence[float], test_replicates: np.ndarray | None, margin: float,
                      confidence: float = 1 - ALPHA) -> dict:
    """Mean of per-seed differences with seed and test-set standard errors combined.

    ``differences``: per seed, method minus reference on the real test set (pp). ``test_replicates``: per
    bootstrap replicate, the mean over the same seeds of the differences on that draw (pp), or None (no test-set
    component). Returns mean, se_seed, se_test, se, df, the two-sided interval, the p-value of "no difference" and
    the TOST p-value for ``margin``; values are None where they cannot be computed (fewer than two seeds).
    """
    values = np.asarray(differences, dtype=np.float64)
    n = len(values)
    out = {"n": n, "mean": None, "se_seed": None, "se_test": None, "se": None, "df": None, "low": None,
           "high": None, "p": None, "tost_p": None, "margin": margin}
    if n == 0 or np.isnan(values).any():
        return out
    out["mean"] = mean = float(values.mean())
    if n < 2:
        return out
    se_seed = float(values.std(ddof=1) / np.sqrt(n))
    se_test = 0.0
    if test_replicates is not None:
        finite = np.asarray(test_replicates, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        se_test = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    se = float(np.hypot(se_seed, se_test))
    out.update(se_seed=se_seed, se_test=se_test if test_replicates is not None else None, se=se)
    if se == 0.0:  # identical differences on every seed and draw: the difference is exactly known
        out.update(df=float("inf"), low=mean, high=mean, p=0.0 if mean != 0 else 1.0,
                   tost_p=0.0 if abs(mean) < margin else 1.0)
        return out
    df = float("inf") if se_seed == 0.0 else (n - 1) * (se / se_seed) ** 4
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df))
    out.update(df=df, low=mean - quantile * se, high=mean + quantile * se,
               p=float(2 * stats.t.sf(abs(mean) / se, df)),
               tost_p=float(max(stats.t.sf((mean + margin) / se, df), stats.t.cdf((mean - margin) / se, df))))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None and is not counted)."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    m = len(present)
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(p_holm: float | None, tost_p_holm: float | None, alpha: float = ALPHA) -> str:
    """``different``, ``equivalent`` (within the margin), ``inconclusive``, or ``n/a`` (no interval)."""
    if p_holm is None or tost_p_holm is None:
        return "n/a"
    if p_holm < alpha:
        return "different"
    if tost_p_holm < alpha:
        return "equivalent"
    return "inconclusive"
