"""Resumable writing: finished videos go to a work folder next to the store, which is assembled at the end.

Work folder ``.<store name>.extract/`` beside the output:

- ``job.json``: what is being extracted (everything the bytes depend on); a resumed run must match it.
- ``shards/shard-NNNNNN.npy``: features of consecutive finished videos, [rows, dim] in the store dtype.
- ``journal.jsonl``: one line per shard, appended only after the shard is on disk: its videos and frame counts, its
  sha256, and each video's source identity (:func:`source_identity`: size and modification time), so that a resumed
  run extracts again a video whose source was replaced since.

A kill loses at most the videos not yet in a shard (shards are written every ``flush_seconds`` or 32 MiB). A resumed
run reads the journal (a last line cut by the kill is dropped), skips the videos it lists and continues; videos
without a usable source are looked at again (a file added since is used). Assembly
writes the store through :class:`FeatureStoreWriter` in the split's order, so the store does not depend on where a
run was interrupted; the work folder is removed once the store is in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from meid_bench.build.features.store import FeatureStoreWriter
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import check_output_file, read_record, write_json_atomic

JOB_FORMAT = "meid-bench-extract-job"
JOB_FORMAT_VERSION = 1
_SHARD_BYTES = 32 << 20


def source_identity(path: Path) -> list[int]:
    """What identifies a source cheaply: a video file's size and modification time (ns); for a frame folder, its
    number of entries, their total size and latest modification time. A replaced source changes it."""
    try:
        if path.is_dir():
            stats = [entry.stat() for entry in os.scandir(path)]
            return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]
    except OSError:
        return []


def work_folder_for(out: Path) -> Path:
    return out.parent / f".{out.name}.extract"


def _fsync_write(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    with open(staging, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


class WorkFolder:
    """The state of one extraction: the job record and the finished videos (in shards)."""

    def __init__(self, out: Path, job: dict[str, Any], *, resume: bool, force: bool,
                 flush_seconds: float = 60.0) -> None:
        self.out = Path(out)
        self.folder = work_folder_for(self.out)
        self.job = {"format": JOB_FORMAT, "format_version": JOB_FORMAT_VERSION, **job}
        self.flush_seconds = float(flush_seconds)
        self.done: dict[str, tuple[str, int, int]] = {}  # video id -> (shard, first row, frames)
        self.sources: dict[str, list[int]] = {}  # video id -> its source's identity when it was extracted
        self.shards: dict[str, str] = {}  # shard -> sha256
        self.resumed = False
        self._pending: list[tuple[str, np.ndarray]] = []
        self._pending_sources: dict[str, list[int]] = {}
        self._pending_bytes = 0
        self._last_flush = time.monotonic()
        check_output_file(self.out, force)  # a folder in its place, a file among its parents, or no --force
        if self.folder.exists():
            if resume:
                self._load()
                self.resumed = True
            elif force:
                shutil.rmtree(self.folder)
            else:
                raise MeidBenchError(f"{self.folder}: an interrupted extraction into {self.out} is there; pass "
                                     "--resume to continue it, or --force to start over")
        if not self.resumed:
            (self.folder / "shards").mkdir(parents=True)
            write_json_atomic(self.folder / "job.json", self.job)
            (self.folder / "journal.jsonl").touch()
        self._next_shard = 1 + max([int(name.split("-")[1].split(".")[0]) for name in self.shards] or [0])

    # -- resuming ------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        remedy = "pass --force to start over"
        saved = read_record(self.folder / "job.json", JOB_FORMAT, JOB_FORMAT_VERSION, remedy) \
            if (self.folder / "job.json").is_file() else None
        if saved is None:
            raise MeidBenchError(f"{self.folder}: job.json is missing (not an extraction work folder?); {remedy}")
        changed = [key for key in sorted(set(saved) | set(self.job)) if saved.get(key) != self.job.get(key)]
        if changed:
            key = changed[0]
            raise MeidBenchError(f"{self.folder}: the interrupted extraction had {key} = {saved.get(key)!r}, this "
                                 f"run has {self.job.get(key)!r} (resuming must not change what the features depend "
                                 f"on); run with the same options, or {remedy}")
        journal = self.folder / "journal.jsonl"
        raw = journal.read_bytes() if journal.is_file() else b""
        *complete, cut = raw.split(b"\n")  # ``cut``: a last line the kill left without its newline, or b""
        for number, line in enumerate(complete, 1):
            try:
                entry = json.loads(line)
                self._apply(entry)
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                raise MeidBenchError(f"{journal}:{number}: not a journal line; the work folder is damaged, "
                                     f"{remedy}") from None
            shard = self.folder / "shards" / entry["shard"]
            if not shard.is_file():
                raise MeidBenchError(f"{journal}:{number}: {shard} is missing; the work folder is damaged, {remedy}")
        if cut:  # drop it, so that the next line starts on a line of its own
            with open(journal, "r+b") as handle:
                handle.truncate(len(raw) - len(cut))

    def _apply(self, entry: dict) -> None:
        shard = str(entry["shard"])
        self.shards[shard] = str(entry["sha256"])
        row = 0
        sources = entry.get("sources") or {}  # journals of earlier versions record none
        for video_id, frames in entry["videos"]:
            self.done[str(video_id)] = (shard, row, int(frames))
            if str(video_id) in sources:
                self.sources[str(video_id)] = list(sources[str(video_id)])
            row += int(frames)

    def forget_changed(self, current: dict[str, list[int]]) -> list[str]:
        """Drop finished videos whose source identity differs from ``current``'s (a replaced file): they are
        extracted again. Videos recorded without an identity (older journals) are kept. Returns the dropped ids."""
        changed = [v for v in self.done if v in self.sources and v in current and self.sources[v] != current[v]]
        for video_id in changed:
            del self.done[video_id]
            del self.sources[video_id]
        return changed

    # -- recording -----------------------------------------------------------------------------------------------
    def add(self, video_id: str, features: np.ndarray, source: list[int] | None = None) -> None:
        """A finished video's features [frames, dim] in the store dtype (on disk at the next flush), and the
        identity of the source they came from."""
        self._pending.append((video_id, np.ascontiguousarray(features)))
        if source is not None:
            self._pending_sources[video_id] = list(source)
        self._pending_bytes += features.nbytes
        if self._pending_bytes >= _SHARD_BYTES or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the pending videos as one shard, then its journal line."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        name = f"shard-{self._next_shard:06d}.npy"
        buffer = io.BytesIO()
        np.save(buffer, np.concatenate([f for _, f in self._pending]), allow_pickle=False)
        data = buffer.getvalue()
        _fsync_write(self.folder / "shards" / name, data)  # an orphan of a killed run is simply overwritten
        entry = {"shard": name, "sha256": hashlib.sha256(data).hexdigest(),
                 "videos": [[v, len(f)] for v, f in self._pending],
                 "sources": {v: self._pending_sources[v] for v, _ in self._pending if v in self._pending_sources}}
        with open(self.folder / "journal.jsonl", "ab") as handle:
            handle.write((json.dumps(entry) + "\n").encode("utf-8"))  # one write: a kill leaves no newline
            handle.flush()
            os.fsync(handle.fileno())
        self._apply(entry)
        self._next_shard += 1
        self._pending, self._pending_bytes, self._pending_sources = [], 0, {}

    # -- assembling ----------------------------------------------------------------------------------------------
    def _shard(self, name: str) -> np.ndarray:
        data = (self.folder / "shards" / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.shards[name]:
            raise MeidBenchError(f"{self.folder / 'shards' / name}: its sha256 differs from the journal's (damaged); "
                                 "pass --force to start over")
        return np.load(io.BytesIO(data), allow_pickle=False)

    def assemble(self, order: Sequence[str], dim: int, dtype: str, attributes: dict[str, Any],
                 progress: Callable[[int], None] | None = None, **writer: Any) -> Path:
        """Write the store: the finished videos of ``order`` in that order, the others recorded missing."""
        self.flush()
        kept = [v for v in order if v in self.done]
        missing = [v for v in order if v not in self.done]
        if not kept:
            raise MeidBenchError(f"{self.out}: no video could be extracted ({len(missing)} recorded missing); nothing "
                                 "to write")
        total = sum(self.done[v][2] for v in kept)
        loaded: tuple[str, np.ndarray] | None = None
        with FeatureStoreWriter(self.out, dim, dtype, total_frames=total, force=True, **writer) as store:
            store.set_attributes(**attributes)
            for video_id in kept:
                shard, row, frames = self.done[video_id]
                if loaded is None or loaded[0] != shard:
                    loaded = (shard, self._shard(shard))
                store.add(video_id, loaded[1][row:row + frames])
                if progress is not None:
                    progress(1)
            store.record_missing(missing)
        return self.out

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
