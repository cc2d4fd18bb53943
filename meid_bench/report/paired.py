"""Paired differences between methods that share seeds: method minus reference, seed by seed, then the mean and a
95% confidence interval from the t distribution over seeds.

Runs of two methods with the same seed share everything the seed fixes (initialisation, batch order), so the
difference seed by seed removes that shared noise; with n seeds the interval is mean +- t(0.975, n - 1) * sd /
sqrt(n), sd the sample standard deviation of the n differences. One seed gives a difference but no interval. Units
are percentage points (pp): the difference of two mAPs in percent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

PAIRED_METRICS = ("mAP", "mAP_head", "mAP_medium", "mAP_tail")
CONFIDENCE = 0.95
DEFAULT_REFERENCES = ("late_avg", "attention")  # the no-trick baseline and the baseline with MEID's aggregator
_KEYS = ["benchmark", "split_checksum", "method", "reference"]

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


def paired_differences(frame: pd.DataFrame, references: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Differences (percentage points) of every method against each reference method present in its split.

    ``frame`` has one row per run: ``benchmark``, ``split_checksum``, ``method``, ``seed`` and ``<metric>_pct``
    for each of :data:`PAIRED_METRICS`. Pairs are the seeds both methods ran, each exactly once (a seed with
    several runs of a method is ambiguous and left out, with a warning). Returns ``(by_seed, summary)``:
    ``by_seed`` has one row per (split, method, reference, seed) with ``<metric>_diff_pp``; ``summary`` one row
    per (split, method, reference) with ``seeds``, ``seed_list`` and ``<metric>_diff_pp_{mean,sd,ci95_low,
    ci95_high}``. A metric missing for any pair (a class group without evaluated classes) has no mean.
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
                by_seed_rows += per_seed.values()
                summary_rows.append(summary)
    metric_columns = [f"{m}_diff_pp" for m in PAIRED_METRICS]
    summary_columns = [f"{m}_diff_pp_{s}" for m in PAIRED_METRICS for s in ("mean", "sd", "ci95_low", "ci95_high")]
    by_seed = pd.DataFrame(by_seed_rows, columns=_KEYS + ["seed"] + metric_columns)
    summary = pd.DataFrame(summary_rows, columns=_KEYS + ["seeds", "seed_list"] + summary_columns)
    return by_seed, summary
