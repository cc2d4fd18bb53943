"""mAP speed and agreement: meid_bench.metrics against scikit-learn's average_precision_score, same inputs.

Default size is the VideoLT test set: 51,239 videos x 1,004 classes, random float32 (or --dtype float64)
scores, about 1.1 positive labels per video (one label each, a second one for 10% of the videos). Prints each
time (best of --repeats), the ratio, and the largest absolute difference per class and in the mean.

    python perf/bench_metrics.py
    python perf/bench_metrics.py --videos 5000 --classes 200 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from sklearn.metrics import average_precision_score

from meid_bench.metrics import average_precision, mean_average_precision, top_k_hit_accuracy


def make_inputs(videos: int, classes: int, seed: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random((videos, classes), dtype=np.dtype(dtype))
    targets = np.zeros((videos, classes), dtype=np.uint8)
    targets[np.arange(videos), rng.integers(0, classes, videos)] = 1
    second = np.flatnonzero(rng.random(videos) < 0.1)
    targets[second, rng.integers(0, classes, len(second))] = 1
    return scores, targets


def best_time(function, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=51_239)
    parser.add_argument("--classes", type=int, default=1_004)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each side; the best is shown")
    args = parser.parse_args()

    scores, targets = make_inputs(args.videos, args.classes, args.seed, args.dtype)
    evaluated = targets.any(axis=0)
    print(f"inputs: {args.videos} videos x {args.classes} classes, {args.dtype} scores, "
          f"{targets.sum() / args.videos:.3f} labels per video, {int(evaluated.sum())} classes with a positive")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")

    # scikit-learn's macro average over the classes that have a positive (it cannot score the others). Its inputs
    # are kept C-ordered: a column-masked (Fortran-ordered) copy made it about 25x slower in our runs.
    sk_targets, sk_scores = targets, scores
    if not evaluated.all():
        sk_targets = np.ascontiguousarray(targets[:, evaluated])
        sk_scores = np.ascontiguousarray(scores[:, evaluated])
    sk_time, sk_ap = best_time(lambda: average_precision_score(sk_targets, sk_scores, average=None), args.repeats)
    ours_time, ours_ap = best_time(lambda: average_precision(scores, targets), args.repeats)
    one_time, one_ap = best_time(lambda: average_precision(scores, targets, num_threads=1), args.repeats)
    topk_time, _ = best_time(lambda: top_k_hit_accuracy(scores, targets, (1, 5)), args.repeats)

    sk_map = float(np.mean(sk_ap))
    ours_map = mean_average_precision(ours_ap).value
    per_class_diff = float(np.max(np.abs(ours_ap[evaluated] - sk_ap)))
    print(f"scikit-learn average_precision_score : {sk_time:8.3f} s   mAP {sk_map:.12f}")
    print(f"meid_bench average_precision         : {ours_time:8.3f} s   mAP {ours_map:.12f}   "
          f"{sk_time / ours_time:6.1f}x faster")
    print(f"meid_bench average_precision 1 thread: {one_time:8.3f} s   {sk_time / one_time:6.1f}x faster")
    print(f"max |AP difference| per class        : {per_class_diff:.3e}   (1 thread vs threads identical: "
          f"{np.array_equal(one_ap, ours_ap, equal_nan=True)})")
    print(f"|mAP difference|                     : {abs(ours_map - sk_map):.3e}")
    print(f"meid_bench top-1/top-5 hit accuracy  : {topk_time:8.3f} s   (no scikit-learn counterpart)")


if __name__ == "__main__":
    main()
