"""Many runs at once: recipes x seeds, each a `meid-bench train` process, several in parallel.

Small models on proxy features leave a GPU mostly idle, so running a few training processes side by side is the
cheap way to get every method with several seeds. Each run is an ordinary run folder; a run whose metrics.json
exists is skipped, so a sweep that was cut short is finished by running it again. Second stages (a recipe with
``init``, e.g. ``crt``) start after every other run of the sweep. On a machine with several GPUs
the processes are spread over them: each starts on the GPU that has the fewest of the sweep's runs at that moment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from meid_bench.bounds import JOBS_MAX, check_int_range, check_seed
from meid_bench.build.features import default_feature_path
from meid_bench.build.features.store import FeatureStore
from meid_bench.build.split_io import load_split
from meid_bench.errors import MeidBenchError
from meid_bench.outputs import Output, check_outputs, split_input
from meid_bench.run_lock import LOCK_NAME, refuse_if_locked
from meid_bench.train.config import list_recipes
from meid_bench.train.resolve import check_run_numbers, resolve_run_recipe
from meid_bench.train.run_folder import check_run_outputs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRun:
    recipe: str
    seed: int
    out: Path
    first_stage: Path | None = None  # a second stage's (recipe ``init``): the run folder it starts from


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``: at least one seed, each an integer the random generators take, none twice."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise MeidBenchError(f"--seeds {text!r}: no seed given; expected comma-separated integers, e.g. 0,1,2")
    seeds = []
    for part in parts:
        if not part:
            continue
        try:
            seeds.append(check_seed(int(part), "--seeds"))
        except ValueError:
            raise MeidBenchError(f"--seeds {text!r}: {part[:40]!r} is not an integer; expected comma-separated "
                                 "integers, e.g. 0,1,2") from None
    return seeds


def plan_sweep(split_dir: Path, recipes: Sequence[str], seeds: Sequence[int], runs_root: Path,
               overrides: Sequence[str] = (), epochs: int | None = None) -> list[SweepRun]:
    """Every run of the sweep, each checked before any starts as `train` checks it: its recipe resolved with
    ``overrides`` and ``epochs``, its seed, its run folder (the output rule, no other writer, no two runs in one
    folder), and the split's feature store."""
    check_outputs([Output(Path(runs_root), "--runs-root", "folder", folder=True, adds_to=True)],
                  [split_input(split_dir)], force=False)
    split = load_split(split_dir)
    names = list_recipes() if list(recipes) == ["all"] else list(recipes)
    if not names:
        raise MeidBenchError("--recipes: no recipe given; e.g. --recipes meid,late_avg or --recipes all")
    if not seeds:
        raise MeidBenchError("--seeds: no seed given; e.g. --seeds 0,1,2")
    store = default_feature_path(split.path)
    if not store.is_file():
        raise MeidBenchError(f"{store}: no feature store; create one with `meid-bench features synth --split "
                             f"{split.path}` (proxy features) or `meid-bench features pack ...`")
    FeatureStore(store).check_split(split)  # a store of another split would fail every run
    runs, seen = [], {}
    for name in names:
        recipe = resolve_run_recipe(name, split, overrides, epochs)  # what `train` would refuse, refused now
        for seed in seeds:
            check_run_numbers(seed, workers=1)
            out = Path(runs_root) / f"{split.name}-{Path(name).stem}-seed{seed}"
            first = recipe.init.source_for(out, split.name, seed) if recipe.second_stage else None
            run = SweepRun(name, seed, out, first)
            if run.out in seen:
                first = seen[run.out]
                raise MeidBenchError(f"{run.out}: the sweep would train both {first.recipe} seed {first.seed} and "
                                     f"{name} seed {seed} into this one run folder; give each recipe and seed once")
            seen[run.out] = run
            check_run_outputs(run.out, split, store, name, option="--runs-root")
            check_outputs([Output(run.out.parent / f"{run.out.name}.log", "--runs-root", "log")],
                          [split_input(split.path)], force=True)
            refuse_if_locked(run.out, "run the sweep")
            runs.append(run)
    planned = {run.out for run in runs if run.first_stage is None}
    for run in runs:
        if run.first_stage is not None and run.first_stage not in planned and \
                not (run.first_stage / "metrics.json").is_file():
            raise MeidBenchError(f"{run.out}: {run.recipe} is a second stage starting from {run.first_stage}, which "
                                 "is neither finished nor in this sweep; add its recipe to --recipes or train it first")
    return runs


def sweep_devices(device: str) -> list[str]:
    """The devices a sweep's processes use: every visible GPU as ``cuda:N`` for ``auto`` or ``cuda`` on a machine
    with several, else just ``device``. A bad or unavailable device is an error before any run starts."""
    import torch  # only here: planning a sweep needs no torch

    from meid_bench.devices import resolve_device

    resolved = resolve_device(device)
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if device in ("auto", "cuda") and count > 1:
        return [f"cuda:{index}" for index in range(count)]
    return [device]


def memory_share(jobs: int, devices: int, runs: int) -> float:
    """The share of a device's memory each run of a sweep counts on: 1/k where k runs at most share one device
    (the pool spreads ``min(jobs, runs)`` processes over ``devices``, the fewest-loaded first)."""
    side_by_side = -(-max(1, min(jobs, runs)) // max(1, devices))
    return 1.0 / side_by_side


class DevicePool:
    """Hands each starting process the device with the fewest running processes (ties: the lowest number)."""

    def __init__(self, devices: Sequence[str]) -> None:
        if not devices:
            raise ValueError("DevicePool needs at least one device")
        self._running = {device: 0 for device in devices}
        self._lock = threading.Lock()

    def acquire(self) -> str:
        with self._lock:
            device = min(self._running, key=lambda d: self._running[d])
            self._running[device] += 1
            return device

    def release(self, device: str) -> None:
        with self._lock:
            self._running[device] -= 1


def run_sweep(split_dir: Path, runs: Sequence[SweepRun], jobs: int, train_args: Sequence[str],
              devices: Sequence[str] = ("auto",)) -> list[SweepRun]:
    """Run every planned run not yet finished, ``jobs`` at a time, each with ``--device`` from ``devices`` (see
    :class:`DevicePool`); returns the runs that failed. Progress is logged (``meid_bench.train.sweep``)."""
    check_int_range(jobs, "--jobs", 1, JOBS_MAX)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    pending = [run for run in runs if not (run.out / "metrics.json").is_file()]
    pool_of_devices = DevicePool(devices)
    spread = f" over {', '.join(devices)}" if len(devices) > 1 else ""
    logger.info(f"{len(runs)} runs planned, {len(runs) - len(pending)} already done, {len(pending)} to run, {jobs} "
                f"at a time{spread}")

    # Runs side by side on one device share its memory: each child, starting on a device the others have not
    # filled yet, would otherwise count on all of it and decide to hold its frames there (--resident auto).
    share = memory_share(jobs, len(devices), len(pending))

    def launch(run: SweepRun) -> tuple[SweepRun, int, float, str]:
        # A folder that exists holds a run cut short (maybe in its first epoch, before any checkpoint): continue it.
        started_before = run.out.is_dir() and any(p.name != LOCK_NAME for p in run.out.iterdir())
        resume = ["--resume"] if started_before else []
        device = pool_of_devices.acquire()
        command = [sys.executable, "-m", "meid_bench", "train", "--split", str(split_dir), "--recipe", run.recipe,
                   "--seed", str(run.seed), "--out", str(run.out), "--device", device, *resume,
                   *(["--memory-share", f"{share:.6g}"] if share < 1.0 else []), *train_args]
        run.out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            with open(run.out.parent / f"{run.out.name}.log", "a") as run_log:
                code = subprocess.call(command, stdout=run_log, stderr=subprocess.STDOUT,
                                       env=dict(os.environ, OMP_NUM_THREADS=threads))
        finally:
            pool_of_devices.release(device)
        return run, code, time.perf_counter() - started, device

    # Second stages start once every first stage has finished: each needs its first stage's best checkpoint.
    failed = []
    for phase in ([run for run in pending if run.first_stage is None],
                  [run for run in pending if run.first_stage is not None]):
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for run, code, seconds, device in pool.map(launch, phase):
                status = "done" if code == 0 else f"FAILED (exit {code}, see {run.out}.log)"
                logger.info(f"{run.out.name}: {status} in {seconds:.0f}s on {device}")
                if code != 0:
                    failed.append(run)
    return failed
