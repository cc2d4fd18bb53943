"""Paired differences between methods that share seeds: method minus reference, seed by seed, then the mean, its
95% interval and a verdict.

Runs of two methods with the same seed share everything the seed fixes (initialisation, batch order), so the
difference seed by seed removes that shared noise. Two intervals are given: the seed-only one, mean +- t(0.975,
n - 1) * sd / sqrt(n) over the n per-seed differences, and the combined one, which adds the test set's sampling
noise from a paired bootstrap over test videos (:mod:`meid_bench.report.inference`). The verdict (different /
equivalent within a stated margin / inconclusive) comes from the combined standard error, Holm-adjusted over every
method and metric of one reference's table. One seed gives a difference but no interval. Units are percentage
points (pp): the difference of two mAPs in percent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from meid_bench.report.inference import MARGINS_PP, combined_interval, holm, verdict

PAIRED_METRICS = ("mAP", "mAP_head", "mAP_medium", "mAP_tail")
CONFIDENCE = 0.95
DEFAULT_REFERENCES = ("late_avg", "attention")  # the no-trick baseline and the baseline with MEID's aggregator
_KEYS = ["benchmark", "split_checksum", "method", "reference"]
# Per metric, the combined-inference columns of the summary (after the seed-only mean, sd and t-interval).
COMBINED_STATS = ("se_seed", "se_test", "df", "combined_low", "combined_high", "p", "p_holm", "tost_p",
                  "tost_p_holm", "margin", "verdict")

logger = logging.getLogger(__name__)


def t_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean, sample standard deviation and the two-sided t confidence interval of paired differences.

    ``sd``, ``low`` and ``high`` are None for fewer than two differences; every value is None for none.
    """
    values = np.asarray(differences, dtype=np.float64)
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "low": None, "high": None}
    mean = float(values.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "low": None, "high": None}
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / np.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def _seeds(rows: pd.DataFrame) -> str:
    return " ".join(str(int(seed)) for seed in sorted(rows.index)[:6]) + (" ..." if len(rows) > 6 else "")


def paired_differences(frame: pd.DataFrame, references: Sequence[str],
                       replicates: Callable[[str, str, int], np.ndarray] | None = None,
                       margins: Mapping[str, float] = MARGINS_PP) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Differences (percentage points) of every method against each reference method present in its split.

    ``frame`` has one row per run: ``benchmark``, ``split_checksum``, ``method``, ``seed`` and ``<metric>_pct``
    for each of :data:`PAIRED_METRICS`. Pairs are the seeds both methods ran, each exactly once (a seed with
    several runs of a method is ambiguous and left out, with a warning). Returns ``(by_seed, summary)``:
    ``by_seed`` has one row per (split, method, reference, seed) with ``<metric>_diff_pp``; ``summary`` one row
    per (split, method, reference) with ``seeds``, ``seed_list`` and ``<metric>_diff_pp_{mean,sd,ci95_low,
    ci95_high}`` (seed-only t-interval), then ``<metric>_diff_pp_<stat>`` for :data:`COMBINED_STATS`: the seed and
    test-set standard errors, degrees of freedom, the combined 95% interval, the p-value of "no difference" and the
    TOST p-value for the metric's margin (pp), each raw and Holm-adjusted over the reference's table (every method
    and metric of that split and reference), and the verdict. ``replicates(split checksum, method, seed)`` gives that
    run's [B, 4] metrics in percent on B bootstrap draws of the test videos (the same draws for every run of the
    split; :func:`meid_bench.report.inference.replicate_metrics`); it is asked only for the runs of differences with
    two seeds or more. Without it the combined interval has the seed component only. A metric missing for any pair
    (a class group without evaluated classes) has no mean.
    """
    by_seed_rows, summary_rows = [], []
    for (benchmark, checksum), part in frame.groupby(["benchmark", "split_checksum"], sort=False):
        seeded = part[part["seed"].notna()]
        runs_per_seed = seeded.groupby(["method", "seed"]).size()
        for (method, seed), count in runs_per_seed[runs_per_seed > 1].items():
            logger.warning(f"{benchmark}: {count} runs of {method} with seed {seed}; that seed is left out of "
                           "the paired differences of that method")
        single = seeded[seeded.set_index(["method", "seed"]).index.map(runs_per_seed) == 1]
        table = {method: rows.set_index("seed") for method, rows in single.groupby("method", sort=False)}
        methods = list(dict.fromkeys(part["method"]))
        for reference in [r for r in references if r in table]:
            for method in [m for m in methods if m != reference and m in table]:
                seeds = sorted(set(table[method].index) & set(table[reference].index))
                if not seeds:  # a comparison asked for that the runs cannot give: say so, not nothing
                    logger.warning(f"{benchmark}: {method} (seeds {_seeds(table[method])}) and the reference "
                                   f"{reference} (seeds {_seeds(table[reference])}) share no seed: no paired "
                                   "difference between them; train both with the same seeds")
                    continue
                identity = {"benchmark": benchmark, "split_checksum": checksum, "method": method,
                            "reference": reference}
                summary = dict(identity, seeds=len(seeds), seed_list=" ".join(str(int(s)) for s in seeds))
                per_seed = {seed: dict(identity, seed=int(seed)) for seed in seeds}
                # Per bootstrap draw, the mean over seeds of the differences [B, 4] (with two seeds or more).
                draw_differences = None
                if replicates is not None and len(seeds) > 1:
                    draw_differences = np.mean([replicates(checksum, method, int(s))
                                                - replicates(checksum, reference, int(s)) for s in seeds], axis=0)
                for metric in PAIRED_METRICS:
                    column = f"{metric}_pct"
                    mine = pd.to_numeric(table[method].loc[seeds, column], errors="coerce").to_numpy(np.float64)
                    theirs = pd.to_numeric(table[reference].loc[seeds, column], errors="coerce").to_numpy(np.float64)
                    differences = mine - theirs
                    for seed, value in zip(seeds, differences):
                        per_seed[seed][f"{metric}_diff_pp"] = None if np.isnan(value) else float(value)
                    interval = t_interval([] if np.isnan(differences).any() else differences)
                    for stat, key in (("mean", "mean"), ("sd", "sd"), ("ci95_low", "low"), ("ci95_high", "high")):
                        summary[f"{metric}_diff_pp_{stat}"] = interval[key]
                    draws = None if draw_differences is None else draw_differences[:, PAIRED_METRICS.index(metric)]
                    combined = combined_interval(differences, draws, float(margins[metric]))
                    for stat, key in (("se_seed", "se_seed"), ("se_test", "se_test"), ("df", "df"),
                                      ("combined_low", "low"), ("combined_high", "high"), ("p", "p"),
                                      ("tost_p", "tost_p"), ("margin", "margin")):
                        summary[f"{metric}_diff_pp_{stat}"] = combined[key]
                by_seed_rows += per_seed.values()
                summary_rows.append(summary)
    _adjust(summary_rows)
    metric_columns = [f"{m}_diff_pp" for m in PAIRED_METRICS]
    summary_columns = [f"{m}_diff_pp_{s}" for m in PAIRED_METRICS
                       for s in ("mean", "sd", "ci95_low", "ci95_high") + COMBINED_STATS]
    by_seed = pd.DataFrame(by_seed_rows, columns=_KEYS + ["seed"] + metric_columns)
    summary = pd.DataFrame(summary_rows, columns=_KEYS + ["seeds", "seed_list", "family_size"] + summary_columns)
    return by_seed, summary


def _adjust(rows: list[dict]) -> None:
    """Holm-adjust, per table (split and reference: every method and metric in it), the p-values of the difference
    tests and, separately, those of the equivalence tests; then give each difference its verdict."""
    families: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        families.setdefault((row["split_checksum"], row["reference"]), []).append(row)
    for family in families.values():
        claims = [(row, metric) for row in family for metric in PAIRED_METRICS]
        for raw, adjusted in (("p", "p_holm"), ("tost_p", "tost_p_holm")):
            values = holm([row[f"{metric}_diff_pp_{raw}"] for row, metric in claims])
            for (row, metric), value in zip(claims, values):
                row[f"{metric}_diff_pp_{adjusted}"] = value
        size = sum(row[f"{metric}_diff_pp_p"] is not None for row, metric in claims)
        for row, metric in claims:
            row["family_size"] = size
            row[f"{metric}_diff_pp_verdict"] = verdict(row[f"{metric}_diff_pp_p_holm"],
                                                       row[f"{metric}_diff_pp_tost_p_holm"])
