"""Hostile-input tests' shared parts: one small valid workspace (annotations, a split with its feature store, npy
sources, a finished 2-epoch run), and the assertion every refused input must pass: the expected exit status, one
`meid-bench: error:` line on stderr, no traceback, and not one file written, changed or removed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from meid_bench.build.features.synth import SynthConfig, synthesize_features
from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split, table_content_sha256
from meid_bench.build.synthetic import write_synthetic_charades
from meid_bench.cli import main

RUN_EPOCHS = 2
TRAIN_SETTINGS = ("--recipe", "late_avg", "--device", "cpu", "--set", "batch_size=32", "--set",
                  "data.train_frames=4", "--set", "data.eval_frames=4", "--set", "model.hidden=8")
PROGRESS_LABELS = ("packing", "simulating")  # click progress bars print their label on a non-terminal stderr


def build_base(root: Path) -> Path:
    """The valid workspace every hostile case copies and then damages in one way."""
    annotations = write_synthetic_charades(root / "ann", num_classes=6, train_videos=120, test_videos=40, seed=3)
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=5.0, val_per_class=3), annotations,
                                root / "split")
    split = load_split(split_dir)
    synthesize_features(split, split_dir / "features.h5", SynthConfig(dim=4, fps=1.0))
    source = root / "src"
    source.mkdir()
    rng = np.random.default_rng(0)
    for subset in ("train", "val", "test"):
        for video_id in split.table(subset)["video_id"]:
            np.save(source / f"{video_id}.npy", rng.standard_normal((3, 4)).astype(np.float32))
    result = invoke("train", "--split", split_dir, "--out", root / "run", "--epochs", RUN_EPOCHS, *TRAIN_SETTINGS)
    assert result.exit_code == 0, result.output
    return root


def workspace(base: Path, tmp_path: Path) -> Path:
    """A fresh copy of the base workspace; its run names the copy's split and feature store."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)

    def relocate(record):
        record["split"]["path"] = str(ws / "split")
        record["features"]["path"] = str(ws / "split" / "features.h5")
    edit_json(ws / "run" / "run.json", relocate)
    return ws


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train_args(ws: Path, out: str = "new-run", epochs: int = 1, *extra) -> list:
    return ["train", "--split", ws / "split", "--out", ws / out, "--epochs", epochs, *TRAIN_SETTINGS, *extra]


def resume_args(ws: Path, *extra) -> list:
    """Resume the workspace's finished run (same options, so only the files decide)."""
    return train_args(ws, "run", RUN_EPOCHS, "--resume", *extra)


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            stat = path.lstat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, path.is_dir())
    return out


def no_traceback(result) -> None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    assert "Traceback" not in result.output


def error_lines(result) -> list[str]:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith("meid-bench: warning: ")
            and line.strip() not in PROGRESS_LABELS]


def assert_refused(ws: Path, args: list, status: int = 2, *fragments: str) -> str:
    """Run ``args``: it must exit with ``status``, one error line, no traceback, nothing written. Returns the line."""
    before = snapshot(ws)
    result = invoke(*args)
    after = snapshot(ws)
    no_traceback(result)
    assert result.exit_code == status, (result.exit_code, result.output)
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("meid-bench: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"written despite the error: {changed[:5]}"
    return lines[0]


def assert_clean_outcome(ws: Path, args: list) -> int:
    """Whatever the verdict, no traceback; a refusal is one error line and writes nothing. Returns the status."""
    before = snapshot(ws)
    result = invoke(*args)
    no_traceback(result)
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert len(error_lines(result)) == 1, result.stderr
        assert snapshot(ws) == before
    return result.exit_code


# -- mutations -----------------------------------------------------------------------------------------------------

TRUNCATIONS = (0, 1, 0.1, 0.5, 0.9, -2)  # keep: bytes, or a fraction of the file, or all but |n| bytes


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    n = int(keep) if isinstance(keep, int) and keep >= 0 else (len(data) + keep if keep < 0 else int(len(data) * keep))
    path.write_bytes(data[:n])


def random_bytes(path: Path, seed: int, size: int | None = None) -> None:
    """Replace the file by random bytes (as many as it had, or ``size``)."""
    size = path.stat().st_size if size is None else size
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())


def overwrite(path: Path, seed: int, start: float, size: int) -> None:
    """Overwrite ``size`` bytes at ``start`` (a fraction of the file) with random bytes."""
    data = bytearray(path.read_bytes())
    at = int(len(data) * start)
    data[at:at + size] = np.random.default_rng(seed).integers(0, 256, min(size, len(data) - at),
                                                               dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def edit_json(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    result = edit(record)
    path.write_text(json.dumps(record if result is None else result, indent=2))


def set_path(record: dict, dotted: str, value, delete: bool = False) -> None:
    """Set (or delete) a field given as ``a.b.c`` (dots inside keys: ``files.train.parquet`` is resolved by trying
    the longest key that exists)."""
    parts = dotted.split(".")
    node = record
    while True:
        for width in range(len(parts), 0, -1):
            key = ".".join(parts[:width])
            if key in node:
                break
        else:
            raise KeyError(dotted)
        if width == len(parts):
            if delete:
                del node[key]
            else:
                node[key] = value
            return
        node, parts = node[key], parts[width:]


def leaf_paths(record, prefix: str = "") -> list[str]:
    """Every field path of a JSON record (objects walked, lists taken whole)."""
    out = []
    for key, value in record.items():
        path = f"{prefix}.{key}" if prefix else key
        out.append(path)
        if isinstance(value, dict):
            out += leaf_paths(value, path)
    return out


WRONG_VALUES = ("text", [1, "x"], {"k": 1}, None, float("nan"), float("inf"), -1, 10 ** 30, True)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_table(split: Path, name: str, edit, update: str = "all") -> None:
    """Rewrite ``name``.parquet through ``edit(table)``, then make the manifest agree (``update``: "sha" its byte
    sha256 only, "all" also rows and content hash, "none" leave it): a hostile edit that tries to pass."""
    path = split / f"{name}.parquet"
    table = edit(pq.read_table(path))
    pq.write_table(table, path)
    if update == "none":
        return

    def fix(manifest):
        entry = manifest["files"][f"{name}.parquet"]
        entry["sha256"] = sha256_of(path)
        if update == "all":
            try:
                entry["content_sha256"] = table_content_sha256(table)
            except TypeError:  # a type the hash does not cover: the loader refuses it anyway
                pass
            entry["rows"] = table.num_rows
    edit_json(split / "manifest.json", fix)


def set_column(name: str, values, kind=None):
    def edit(table: pa.Table) -> pa.Table:
        data = values(table) if callable(values) else values
        array = data if isinstance(data, (pa.Array, pa.ChunkedArray)) else pa.array(data, kind)
        return table.set_column(table.column_names.index(name), name, array)
    return edit
