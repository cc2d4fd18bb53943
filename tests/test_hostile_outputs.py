"""Second hostile round, outputs and writers: no command writes over what it reads (with or without --force),
--force replaces only what the command itself wrote, one writer per run folder, and a sweep checks every run
before it starts any. Each case is one clear error (exit status 2), nothing written."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hostile_support import (TRAIN_SETTINGS, assert_refused, invoke, resume_args, sha256_of, train_args,
                             workspace)
from meid_bench.errors import MeidBenchError
from meid_bench.outputs import SPLIT_FILES
from meid_bench.run_lock import LOCK_NAME, acquire_run_lock, lock_holder

BUILD = ("build", "charadeslt", "--imbalance", "5", "--val-per-class", "3")


def build_args(ws, out, *extra):
    return [*BUILD, "--annotations", ws / "ann", "--out", out, *extra]


# -- an output never is, holds or lies inside an input --------------------------------------------------------------

def test_outputs_that_name_an_input_are_refused_with_or_without_force(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    run, split = ws / "run", ws / "split"
    cases = [
        (build_args(ws, ws / "ann", "--force"), "is --annotations"),
        (build_args(ws, ws, "--force"), "contains --annotations"),
        (["features", "pack", "--split", split, "--source", ws / "src", "--format", "npy", "--out", ws / "src",
          "--force"], "is --source"),
        (["diagnose", run, "--no-frames", "--json", ws / "ann", "--annotations", ws / "ann", "--force"],
         "is --annotations"),
        (["report", run, "--out", run, "--force"], "is run"),
        (["report", run, "--out", run / "report", "--force"], "lies inside run"),
        (["report", run, "--out", ws, "--force"], "contains run"),
        (["diagnose", run, "--no-frames", "--json", run / "run.json"], "lies inside RUN_DIR"),
        (["diagnose", run, "--no-frames", "--json", run / "run.json", "--force"], "lies inside RUN_DIR"),
        (["verify", split, "--write-reference", split / "manifest.json"], "is manifest.json of --split"),
        (["verify", split, "--write-reference", split / "test.parquet"], "is test.parquet of --split"),
        (["features", "synth", "--split", split, "--out", split / "train.parquet", "--force"],
         "is train.parquet of --split"),
        (["features", "synth", "--split", split, "--out", split, "--force"], "is --split"),
        (["evaluate", "--split", split, "--predictions", run / "predictions" / "test.parquet", "--out",
          run / "predictions" / "test.parquet", "--force"], "--out"),
        (["evaluate", "--split", split, "--predictions", run / "predictions" / "test.parquet", "--out", run,
          "--force"], "the folder of another run"),
        (train_args(ws, "split"), "is --split"),
        (train_args(ws, ".", 1, "--resume"), "contains --split"),
    ]
    for args, fragment in cases:
        assert_refused(ws, args, 2, fragment)


def test_a_symlink_or_hard_link_to_an_input_is_the_input(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    (ws / "alias").symlink_to(ws / "run")
    os.link(ws / "split" / "manifest.json", ws / "manifest-link.json")
    assert_refused(ws, ["report", ws / "run", "--out", ws / "alias", "--force"], 2, "is run")
    assert_refused(ws, ["verify", ws / "split", "--write-reference", ws / "manifest-link.json"], 2,
                   "is manifest.json of --split")


def test_force_replaces_only_what_the_command_wrote(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    (ws / "notes.txt").write_text("mine")
    (ws / "mine").mkdir()
    (ws / "mine" / "thesis.tex").write_text("years of work")
    cases = [
        (build_args(ws, ws / "mine", "--force"), "is not a split folder"),
        (build_args(ws, ws / "run", "--force"), "is not a split folder"),
        (["report", ws / "run", "--out", ws / "mine", "--force"], "is not a report folder"),
        (["report", ws / "run", "--out", ws / "split", "--force"], "is not a report folder"),
        (["features", "synth", "--split", ws / "split", "--out", ws / "notes.txt", "--force"],
         "is not a feature store"),
        (["diagnose", ws / "run", "--no-frames", "--json", ws / "notes.txt", "--force"], "is not a diagnosis"),
        (["verify", ws / "split", "--write-reference", ws / "notes.txt"], "is not a split reference"),
        (["features", "pack", "--split", ws / "split", "--source", ws / "src", "--format", "npy", "--out",
          next((ws / "src").iterdir()), "--force"], "is not a feature store"),
        (["evaluate", "--run", ws / "run", "--out", ws / "mine", "--force"], None),
    ]
    (ws / "mine" / "metrics.json").write_text("{}")
    cases[-1] = (cases[-1][0], "is not a metrics file")
    for args, fragment in cases:
        assert_refused(ws, args, 2, fragment)


def test_force_does_replace_the_commands_own_outputs(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    report = ["report", ws / "run", "--out", ws / "rep"]
    assert invoke(*report).exit_code == 0
    assert (ws / "rep" / "report.json").is_file()
    assert invoke(*report, "--force").exit_code == 0
    diagnosis = ["diagnose", ws / "run", "--no-frames", "--annotations", ws / "ann", "--json", ws / "d.json"]
    first = invoke(*diagnosis)
    if first.exit_code == 0:  # the synthetic annotations may lack the verb files: then only the refusal matters
        assert_refused(ws, diagnosis, 2, "already exists; pass --force")
        assert invoke(*diagnosis, "--force").exit_code == 0
    # evaluate --run updates the run's own metrics files, nothing else of it
    before = {name: sha256_of(ws / "run" / name) for name in ("run.json", "log.jsonl")}
    assert invoke("evaluate", "--run", ws / "run", "--force").exit_code == 0
    assert before == {name: sha256_of(ws / "run" / name) for name in ("run.json", "log.jsonl")}
    assert not (ws / "run" / LOCK_NAME).exists()


def test_build_force_over_a_split_keeps_its_feature_stores(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    split = ws / "split"
    store = sha256_of(split / "features.h5")
    (split / "features-v2.h5").write_bytes((split / "features.h5").read_bytes())
    (split / "notes.txt").write_text("mine")
    manifest = json.loads((split / "manifest.json").read_text())
    result = invoke(*build_args(ws, split, "--force"))
    assert result.exit_code == 0, result.output
    assert "kept 3 file(s) that `build` does not write" in result.stderr and "the rebuilt split is the same" in \
        result.stderr
    assert sha256_of(split / "features.h5") == store and (split / "notes.txt").read_text() == "mine"
    assert (split / "features-v2.h5").is_file()
    assert json.loads((split / "manifest.json").read_text())["files"] == manifest["files"]
    assert not [p for p in ws.iterdir() if p.name.startswith(".split.")]  # no staging or retired folder left
    # A different rebuild keeps them too, and says they no longer apply.
    result = invoke(*[a if a != "5" else "4" for a in build_args(ws, split, "--force")])
    assert result.exit_code == 0 and "DIFFERENT" in result.stderr
    assert sha256_of(split / "features.h5") == store
    assert set(SPLIT_FILES) <= {p.name for p in split.iterdir()}


# -- paths the system cannot take -------------------------------------------------------------------------------

def test_over_long_and_nul_paths_are_one_line_errors(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    long_name = ws / ("x" * 300)
    deep = ws.joinpath(*(["y" * 200] * 25))
    for out in (long_name, deep):
        assert_refused(ws, train_args(ws, out), 2, "the path is too long")
        assert_refused(ws, build_args(ws, out), 2, "the path is too long")
        assert_refused(ws, ["report", ws / "run", "--out", out], 2, "the path is too long")
    assert_refused(ws, ["train", "--split", long_name, "--out", ws / "r", *TRAIN_SETTINGS], 2, "too long")
    assert_refused(ws, build_args(ws, f"{ws}/a\x00b"), 2, "contains a NUL byte")


# -- one writer per run folder ----------------------------------------------------------------------------------

def _wait_for(predicate, what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_second_train_into_a_live_run_refuses_and_the_first_completes_untouched(hostile_base, tmp_path):
    """Real processes: the first `train` is frozen (SIGSTOP) while it holds its run folder; a second `train`, a
    `--resume`, an `evaluate --run` into it and a `report` of it refuse at once; the first then completes as if
    alone."""
    ws = workspace(hostile_base, tmp_path)
    epochs = 12  # long enough that the first run cannot finish between taking its lock and being frozen
    args = [str(a) for a in train_args(ws, "live", epochs)]
    first = subprocess.Popen([sys.executable, "-m", "meid_bench", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
    run = ws / "live"
    try:
        # Frozen as soon as it holds its folder (its lock names it), not at some later point of its run.
        _wait_for(lambda: lock_holder(run) or first.poll() is not None, "the first run to lock its folder")
        os.kill(first.pid, signal.SIGSTOP)
        try:
            assert first.poll() is None, first.communicate()
            holder = lock_holder(run)
            assert holder is not None and holder["pid"] == first.pid
            for second in (train_args(ws, "live", epochs), train_args(ws, "live", epochs, "--resume"),
                           ["evaluate", "--run", run, "--force"], ["report", run, "--out", ws / "rep"]):
                line = assert_refused(ws, second, 2, "is writing this run folder", f"pid {first.pid}")
                assert "meid-bench train" in line
        finally:
            os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err.decode()
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == \
        list(range(epochs))
    assert (run / "metrics.json").is_file() and not (run / LOCK_NAME).exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    fresh = invoke(*train_args(ws, "alone", epochs))
    assert fresh.exit_code == 0
    assert (run / "metrics.json").read_text() == (ws / "alone" / "metrics.json").read_text()


def test_a_lock_left_by_a_dead_process_is_taken_over(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    (ws / "run" / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                    "command": "meid-bench train"}))
    assert lock_holder(ws / "run") is None
    result = invoke(*resume_args(ws))
    assert result.exit_code == 0, result.output
    assert "took over the lock left by meid-bench train" in result.stderr
    assert not (ws / "run" / LOCK_NAME).exists()


def test_run_lock_is_exclusive_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "a" / "b"
    with acquire_run_lock(folder, "meid-bench train") as lock:
        assert lock.held and lock_holder(folder)["pid"] == os.getpid()
        with pytest.raises(MeidBenchError, match="is writing this run folder"):
            acquire_run_lock(folder, "meid-bench train")
    assert lock_holder(folder) is None and not (tmp_path / "a").exists()  # the folders it made, removed again


# -- sweep checks every run before starting any -------------------------------------------------------------------

def sweep_args(ws, *extra, recipes="late_avg", seeds="0"):
    return ["sweep", "--split", ws / "split", "--recipes", recipes, "--seeds", seeds, "--runs-root", ws / "runs",
            "--device", "cpu", *extra]


def test_sweep_refuses_what_train_refuses_before_any_run_starts(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    (ws / "bad.yaml").write_text("model: {name: late_avg}\noptim: {lr: -1}\n")
    (ws / "escape.yaml").write_text("name: ../../escaped\nmodel: {name: late_avg}\n")
    cases = [
        (sweep_args(ws, seeds=" , "), "no seed given"),
        (sweep_args(ws, seeds="0,0"), "into this one run folder"),
        (sweep_args(ws, recipes="late_avg,late_avg"), "into this one run folder"),
        (sweep_args(ws, seeds="0,x"), "'x' is not an integer"),
        (sweep_args(ws, seeds=str(2 ** 64)), "a seed must be an integer from 0 to"),
        (sweep_args(ws, seeds="-1"), "a seed must be an integer from 0 to"),
        (sweep_args(ws, "--epochs", "0"), "--epochs 0: must be >= 1"),
        (sweep_args(ws, "--set", "optim.lr=-1"), "optim.lr: must be > 0"),
        (sweep_args(ws, "--set", "optim.lr=" + "[" * 50 + "1" + "]" * 50), "nests lists or mappings"),
        (sweep_args(ws, recipes=f"late_avg,{ws / 'bad.yaml'}"), "optim.lr"),
        (sweep_args(ws, recipes=str(ws / "escape.yaml")), "is not a usable recipe name"),
        (sweep_args(ws, recipes="late_avg,nope"), "unknown recipe name"),
        (sweep_args(ws, "--jobs", "0"), "--jobs 0"),
    ]
    for args, fragment in cases:
        assert_refused(ws, args, 2, fragment)
    assert not (ws / "runs").exists()


# -- train options with bounds --------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, fragment", [
    (("--seed", str(2 ** 64)), "a seed must be an integer from 0 to"),
    (("--seed", "-3"), "a seed must be an integer from 0 to"),
    (("--workers", "100000"), "--workers 100000: must be an integer from 0 to 64"),
    (("--set", "optim.lr=" + "[" * 5000 + "]" * 5000), "nests lists or mappings"),
    (("--set", "name=../../escaped"), "is not a usable recipe name"),
    (("--set", 'name="a\\0b"'), "is not a usable recipe name"),  # YAML's escape for a NUL byte
], ids=["seed-2**64", "seed-negative", "workers", "set-depth", "name-dots", "name-nul"])
def test_train_option_bounds(hostile_base, tmp_path, option, fragment):
    ws = workspace(hostile_base, tmp_path)
    assert_refused(ws, train_args(ws, "new-run", 1, *option), 2, fragment)


def test_build_and_synth_seed_bounds(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    for seed in ("-1", str(2 ** 64)):
        assert_refused(ws, build_args(ws, ws / "s2", "--seed", seed), 2, f"--seed {seed}: a seed must be")
        assert_refused(ws, ["features", "synth", "--split", ws / "split", "--out", ws / "f.h5", "--seed", seed], 2,
                       f"--seed {seed}: a seed must be")


# -- write failures -------------------------------------------------------------------------------------------------

class _FullDisk:
    """``os`` as fileio sees it, except that every file it opens for writing fails its first write with ENOSPC."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def fdopen(self, handle, *args, **kwargs):
        stream = self._real.fdopen(handle, *args, **kwargs)

        def write(_):
            raise OSError(errno.ENOSPC, "No space left on device")
        stream.write = write
        return stream


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old-" in p.name)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(hostile_base, tmp_path, monkeypatch):
    from meid_bench import fileio
    from meid_bench.train import checkpoint

    ws = workspace(hostile_base, tmp_path)
    monkeypatch.setattr(fileio, "os", _FullDisk(os))
    from meid_bench.build import split_io

    def full_disk_parquet(table, path):
        path.write_bytes(b"PAR1")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(split_io, "write_parquet", full_disk_parquet)
    for args in (["evaluate", "--run", ws / "run", "--out", ws / "ev"], ["report", ws / "run", "--out", ws / "rep"],
                 build_args(ws, ws / "s2"), train_args(ws, "r2")):
        result = invoke(*args)
        assert result.exit_code == 2, (args[0], result.output)
        lines = [line for line in result.stderr.splitlines() if line.startswith("meid-bench: error: ")]
        assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in result.output
        assert _leftovers(ws) == [], (args[0], _leftovers(ws))
    monkeypatch.setattr(fileio, "os", os)

    def full_disk_save(payload, path):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: file write failed")
    monkeypatch.setattr(checkpoint.torch, "save", full_disk_save)
    result = invoke(*train_args(ws, "r3"))
    assert result.exit_code == 2 and "the checkpoint could not be written" in result.stderr, result.output
    assert "Traceback" not in result.output and _leftovers(ws / "r3") == []


def test_recipes_into_a_closed_pipe_is_one_line(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (`meid-bench recipes meid | true`)
    try:
        done = subprocess.run([sys.executable, "-m", "meid_bench", "recipes", "meid"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["meid-bench: error: the output was closed before everything was written to it (broken pipe); "
                     "read the whole output, or write it to a file"], done.stderr


def test_demo_force_replaces_only_an_earlier_demo(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    project = ws / "project"
    (project / "runs" / "mine").mkdir(parents=True)
    (project / "runs" / "mine" / "run.json").write_text("{}")
    assert_refused(ws, ["demo", "--out", project, "--force"], 2, "not written by `meid-bench demo`")
