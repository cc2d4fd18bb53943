"""Long-tail target profiles: how many training videos each class should keep.

Classes are ordered by their original training count (largest first, ties by class id). A profile gives a
relative size r_k in [1/IF, 1] to the class of rank k; the targets are ``s * r_k`` with the largest scale ``s``
for which no class's target exceeds what it has (``s = min_k count_k / r_k``).
"""

from __future__ import annotations

import numpy as np

from meid_bench.errors import MeidBenchError

PROFILES = ("exponential", "pareto")
PARETO_SHAPE = 6.0  # Distribution-Balanced Loss (ECCV 2020) used shape 6 for VOC-MLT / COCO-MLT


def rank_order(counts: np.ndarray) -> np.ndarray:
    """Class ids from the largest original count to the smallest; equal counts in class-id order."""
    return np.lexsort((np.arange(len(counts)), -np.asarray(counts)))


def relative_profile(num_classes: int, imbalance: float, profile: str = "exponential") -> np.ndarray:
    """Relative target r_k of the class of rank k: r_0 = 1, r_{C-1} = 1 / imbalance.

    - exponential (CIFAR-LT): r_k = IF^(-k / (C - 1)).
    - pareto: the Pareto(shape 6) density at C evenly spaced points between its 1% and 99% quantiles, a power law
      in the rank quantile; raised to the power that makes its max / min exactly IF.
    """
    if not np.isfinite(imbalance) or imbalance < 1:
        raise MeidBenchError(f"--imbalance {imbalance}: must be a number >= 1 (largest / smallest class target)")
    if num_classes < 2:
        return np.ones(num_classes)
    rank = np.arange(num_classes) / (num_classes - 1)
    if profile == "exponential":
        return imbalance ** (-rank)
    if profile == "pareto":
        from scipy import stats  # half a second to import: only this profile needs it

        x = np.linspace(stats.pareto.ppf(0.01, PARETO_SHAPE), stats.pareto.ppf(0.99, PARETO_SHAPE), num_classes)
        log_density = stats.pareto.logpdf(x, PARETO_SHAPE)
        log_density = (log_density - log_density[0]) / (log_density[0] - log_density[-1])  # 0 .. -1
        return imbalance ** log_density
    raise MeidBenchError(f"--profile {profile!r}: choose one of {', '.join(PROFILES)}")


def class_targets(counts: np.ndarray, imbalance: float, profile: str = "exponential") -> np.ndarray:
    """Target number of training videos per class (float, indexed by class id), scaled as large as ``counts``
    allow."""
    counts = np.asarray(counts, dtype=np.float64)
    order = rank_order(counts)
    relative = relative_profile(len(counts), imbalance, profile)
    scale = float(np.min(counts[order] / relative))
    targets = np.empty(len(counts))
    targets[order] = scale * relative
    return targets
