"""Build time and peak memory against a bare `pandas.read_csv` of the same source files, side by side.

    python perf/bench_build.py [--data DATA] [--repeat 5]     # DATA holds charades/ and videolt/

Each measurement runs in a fresh child process (peak RSS is per process), the best of --repeat is kept, and the
ratios are printed. The build includes reading, repairing, selecting, writing Parquet and the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
task, data, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
import pandas as pd
import numpy as np, pyarrow, scipy.sparse  # imports are not timed, for both sides
from meid_bench.build.protocol import BuildOptions, build_and_write
start = time.perf_counter()
if task == "read_csv charades":
    for name in ("Charades_v1_train.csv", "Charades_v1_test.csv"):
        pd.read_csv(data / "charades" / name)
elif task == "read_csv videolt":
    for name in ("train.lst", "validate.lst", "test.lst", "count-labels-train.lst"):
        pd.read_csv(data / "videolt" / name, sep=" ", header=None)
elif task == "build charadeslt":
    build_and_write(BuildOptions("charadeslt"), data / "charades", Path(out) / "s", force=True)
elif task == "build charadeslt --target-scale 1":
    build_and_write(BuildOptions("charadeslt", target_scale=1.0), data / "charades", Path(out) / "s", force=True)
elif task == "build videolt":
    build_and_write(BuildOptions("videolt"), data / "videolt", Path(out) / "s", force=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(task: str, data: Path, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            result = subprocess.run([sys.executable, "-c", CHILD, task, str(data), out], check=True,
                                    capture_output=True, text=True)
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in runs), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MEID_BENCH_DATA", "data")),
                        help="folder holding charades/ and videolt/ [default: $MEID_BENCH_DATA or ./data]")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pairs = [("build charadeslt", "read_csv charades"), ("build charadeslt --target-scale 1", "read_csv charades"),
             ("build videolt", "read_csv videolt")]
    results = {task: measure(task, args.data, args.repeat) for task in dict.fromkeys(t for p in pairs for t in p)}
    print(f"{'task':<38}{'seconds':>10}{'peak RSS MB':>14}")
    for task, result in results.items():
        print(f"{task:<38}{result['seconds']:>10.3f}{result['peak_rss_mb']:>14.0f}")
    print()
    for build, baseline in pairs:
        ratio = results[build]["seconds"] / results[baseline]["seconds"]
        print(f"{build} / {baseline}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
