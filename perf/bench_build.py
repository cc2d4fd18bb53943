"""`meid-bench build`, whole process, against a process that imports pandas and reads the same CSV files.

    python perf/bench_build.py [--data DATA] [--repeats 7] [--also TREE]    # DATA holds charades/ and videolt/

Every measurement is a fresh process timed from start to exit (interpreter start-up and imports included, on both
sides): the build is the ``meid-bench build`` command as a user types it (reading, repairing, selecting, writing
the Parquet tables and the manifest); the baseline runs ``python -c "import pandas; pandas.read_csv(...)"`` on the
benchmark's source lists. The two alternate, the first alternating, for ``--repeats`` rounds; the script prints
median seconds with their range, the largest peak RSS, and the median of the per-round ratios with their range.
``--also TREE`` times the same build from another meid-bench source tree too (an older checkout, say), in the same
rounds: the child runs in TREE, so ``-m meid_bench`` imports TREE's package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READ_CSV = {
    "charades": "import sys, pandas as pd; d = sys.argv[1]; [pd.read_csv(f'{d}/{n}') for n in "
                "('Charades_v1_train.csv', 'Charades_v1_test.csv')]",
    "videolt": "import sys, pandas as pd; d = sys.argv[1]; [pd.read_csv(f'{d}/{n}', sep=' ', header=None) for n in "
               "('train.lst', 'validate.lst', 'test.lst', 'count-labels-train.lst')]",
}
PAIRS = [  # (label, build arguments, source folder)
    ("build charadeslt", ["charadeslt"], "charades"),
    ("build charadeslt --target-scale 1", ["charadeslt", "--target-scale", "1"], "charades"),
    ("build videolt", ["videolt"], "videolt"),
]


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    process.stderr.close()
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MEID_BENCH_DATA", "data")),
                        help="folder holding charades/ and videolt/ [default: $MEID_BENCH_DATA or ./data]")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--also", type=Path, default=None, help="another meid-bench source tree to time too")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "meid_bench", "build"]
    print(f"whole processes, median of {args.repeats} alternated rounds [range]; python {sys.version.split()[0]}")
    print(f"{'task':<36}{'seconds':>20}{'peak RSS MB':>13}   ratio to the read_csv process")
    with tempfile.TemporaryDirectory() as out:
        for label, build_args, folder in PAIRS:
            source = args.data / folder
            build = cli + build_args + ["--annotations", str(source.resolve()), "--out", f"{out}/s", "--force"]
            tasks = {label: (build, None),
                     f"read_csv ({folder})": ([sys.executable, "-c", READ_CSV[folder], str(source)], None)}
            if args.also is not None:
                tasks[f"{label} ({args.also})"] = (build, args.also.resolve())
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in tasks}
            for name, (command, cwd) in tasks.items():  # one untimed run each: files and modules in the page cache
                timed(command, cwd)
            for round_ in range(args.repeats):
                for name in (list(tasks) if round_ % 2 == 0 else list(tasks)[::-1]):
                    results[name].append(timed(*tasks[name]))
            shutil.rmtree(f"{out}/s", ignore_errors=True)
            for name, runs in results.items():
                seconds = [s for s, _ in runs]
                line = (f"{name:<36}{statistics.median(seconds):8.3f} [{min(seconds):.3f}-{max(seconds):.3f}]"
                        f"{max(r for _, r in runs):13.0f}")
                if name.startswith(label):
                    baseline = [s for s, _ in results[f"read_csv ({folder})"]]
                    ratios = [b / a for b, a in zip(seconds, baseline)]
                    line += f"   {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"
                print(line)


if __name__ == "__main__":
    main()
