"""Pack per-video feature files into a feature store: ``npy``, ``i3d`` and ``txt-dir`` sources.

- ``npy``: ``<source>/<video_id>.npy`` holding [T, D] (as VideoLT ships its features).
- ``i3d``: ``<source>/<video_id>.npy`` holding [T, 1, 1, D] (the common I3D release).
- ``txt-dir``: ``<source>/<video_id>/`` with one file per frame holding one whitespace-separated vector, ordered
  by the number that ends the file name (the official Charades two-stream fc7 release).

Packing streams: a pre-pass reads only headers (or lists folders) to size the store and give every video its rows,
then worker threads read each ``.npy`` source in pieces (positional reads into buffers the thread reuses, small
enough to stay in the CPU cache), check them and write them straight to their rows in the store (processes parse text, whose parsing holds the GIL, and the main
thread writes). A bounded window of videos is in flight: memory stays flat whatever the number of videos.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import re
import threading
import tokenize
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from meid_bench.checks import check_number
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import check_free_space
from meid_bench.build.features.frames import active_classes, frame_times, pack_frame_labels
from meid_bench.build.features.store import FeatureStoreWriter, _store_dtype, check_finite

PACK_FORMATS = ("npy", "i3d", "txt-dir")
# What numpy raises on a damaged .npy file: a malformed header is parsed as Python literals (tokenize, ast).
_NPY_ERRORS = (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError)
_FRAME_NUMBER = re.compile(r"(\d+)(?:\.[^.\d][^.]*)?$")  # digits ending the name, before one extension


@dataclass
class PackReport:
    """What a pack wrote."""

    path: Path
    videos: int
    frames: int
    dim: int
    dtype: str
    missing: list[str] = field(default_factory=list)
    ignored: int = 0  # source entries that are not videos of the split


def split_video_table(split: Any):
    """Every video of the split (train, val, test, in that order) with its duration and segments."""
    import pandas as pd

    tables = [split.table(name) for name in ("train", "val", "test")]
    table = pd.concat(tables, ignore_index=True)
    duplicated = table["video_id"][table["video_id"].duplicated()]
    if len(duplicated):
        raise MeidBenchError(f"{split.path}: video {duplicated.iloc[0]!r} appears in two subsets; rebuild the split")
    return table


@dataclass(frozen=True)
class _NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int | None  # where the values start; None: read with numpy.load (Fortran order, other versions)


def _npy_header(path: Path) -> _NpyHeader:
    # The header only; the frames are loaded later, by a worker.
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:  # rare newer versions: let numpy parse it
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                shape, dtype, fortran = array.shape, array.dtype, True
                del array
            offset = None if fortran and len(shape) > 1 else handle.tell()
    except _NPY_ERRORS as exc:
        raise MeidBenchError(f"{path}: not a readable .npy file ({exc}); re-export it with numpy.save") from None
    return _NpyHeader(tuple(shape), np.dtype(dtype), offset)


def _frame_files(folder: Path) -> list[Path]:
    """The frame files of a txt-dir video, ordered by the number ending their names."""
    numbered = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        match = _FRAME_NUMBER.search(entry.name)
        if match is None:
            raise MeidBenchError(f"{folder / entry.name}: no frame number at the end of the file name; txt-dir "
                                 "frames are named like VIDEO-000001.txt")
        numbered.append((int(match.group(1)), entry.name))
    numbered.sort()
    for (a, name_a), (b, name_b) in zip(numbered, numbered[1:]):
        if a == b:
            raise MeidBenchError(f"{folder}: files {name_a} and {name_b} carry the same frame number {a}")
    return [folder / name for _, name in numbered]


def _check_shape(path: Path, fmt: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, int]:
    """(frames, dim) of a .npy source, or a MeidBenchError saying what shape was expected."""
    if dtype.kind not in "fiu":
        raise MeidBenchError(f"{path}: dtype {dtype}, expected floating point features")
    if fmt == "npy" and len(shape) == 2:
        frames, dim = shape
    elif fmt == "i3d" and len(shape) == 4 and shape[1:3] == (1, 1):
        frames, dim = shape[0], shape[3]
    else:
        expected = "[T, D]" if fmt == "npy" else "[T, 1, 1, D]"
        raise MeidBenchError(f"{path}: array of shape {list(shape)}, format {fmt} expects {expected}")
    if frames < 1 or dim < 1:
        raise MeidBenchError(f"{path}: array of shape {list(shape)} holds no frames")
    return int(frames), int(dim)


def _load_npy(path: Path, fmt: str, dim: int, dtype: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except _NPY_ERRORS as exc:
        raise MeidBenchError(f"{path}: not a readable .npy file ({exc}); re-export it with numpy.save") from None
    frames, got_dim = _check_shape(path, fmt, array.shape, array.dtype)
    if got_dim != dim:
        raise MeidBenchError(f"{path}: features of dimension {got_dim}, the other videos have {dim}")
    array = array.reshape(frames, dim)
    if array.dtype.kind == "f" and array.dtype != _store_dtype(dtype):
        check_finite(array, str(path))  # before the cast, so the message shows the source's own value
    with np.errstate(over="ignore"):  # overflow shows up as inf, reported just below
        out = np.ascontiguousarray(array, dtype=_store_dtype(dtype))
    check_finite(out, str(path))
    return out


def _load_txt_dir(folder: Path, dim: int, dtype: str) -> np.ndarray:
    files = _frame_files(folder)
    if not files:
        raise MeidBenchError(f"{folder}: no frame files; a txt-dir video holds one file per frame")
    out = np.empty((len(files), dim), dtype=_store_dtype(dtype))
    for row, path in enumerate(files):
        try:
            vector = np.array(path.read_text().split(), dtype=np.float64)
        except ValueError as exc:
            raise MeidBenchError(f"{path}: not a whitespace-separated vector of numbers ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MeidBenchError(f"{path}: unreadable ({exc})") from None
        if vector.shape != (dim,):
            raise MeidBenchError(f"{path}: a vector of {vector.size} numbers, expected {dim} (the dimension of "
                                 "the first frame packed)")
        check_finite(vector[None], str(path))
        with np.errstate(over="ignore"):
            out[row] = vector
    check_finite(out, str(folder))
    return out


def _load(path: Path, fmt: str, dim: int, dtype: str) -> np.ndarray:
    return _load_txt_dir(path, dim, dtype) if fmt == "txt-dir" else _load_npy(path, fmt, dim, dtype)


_CHUNK_BYTES = 512 << 10  # a source is read, checked and written in pieces this large: they stay in the CPU cache


class _Buffers(threading.local):
    """Per thread: a source buffer and a store-dtype buffer, reused from piece to piece and video to video."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, count: int, dtype: np.dtype) -> np.ndarray:
        nbytes = count * dtype.itemsize
        array = self.arrays.get(name)
        if array is None or array.nbytes < nbytes:
            array = self.arrays[name] = np.empty(max(nbytes, _CHUNK_BYTES), dtype=np.uint8)
        return array[:nbytes].view(dtype)


def _copy_npy(path: Path, header: _NpyHeader, fmt: str, dim: int, dtype: str, buffers: _Buffers,
              write: Callable[[int, np.ndarray], None]) -> None:
    """Read a .npy source piece by piece (positional reads into this thread's reused buffers), check each piece,
    cast it to the store dtype and hand it to ``write(first_frame, frames)``. Falls back to numpy.load where the
    header said so."""
    if header.data_offset is None:
        write(0, _load_npy(path, fmt, dim, dtype))
        return
    frames, got_dim = _check_shape(path, fmt, header.shape, header.dtype)
    if got_dim != dim:
        raise MeidBenchError(f"{path}: features of dimension {got_dim}, the other videos have {dim}")
    row_bytes = dim * header.dtype.itemsize
    store_dtype = _store_dtype(dtype)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise MeidBenchError(f"{path}: unreadable ({exc.strerror})") from None
    try:
        size = os.fstat(fd).st_size
        if size != header.data_offset + frames * row_bytes:
            raise MeidBenchError(f"{path}: not a readable .npy file ({size} bytes, its header announces "
                                 f"{header.data_offset + frames * row_bytes}: truncated, or changed while packing); "
                                 "re-export it with numpy.save and pack again")
        step = max(1, _CHUNK_BYTES // row_bytes)
        for first in range(0, frames, step):
            count = min(step, frames - first)
            source = buffers.get("source", count * dim, header.dtype).reshape(count, dim)
            view = memoryview(source.view(np.uint8).reshape(-1))
            done, at = 0, header.data_offset + first * row_bytes
            while done < len(view):
                got = os.preadv(fd, [view[done:]], at + done)
                if got <= 0:
                    raise MeidBenchError(f"{path}: not a readable .npy file (it ended early); re-export it with "
                                     "numpy.save")
                done += got
            if source.dtype == store_dtype:
                check_finite(source, str(path), first)
                write(first, source)
                continue
            if source.dtype.kind == "f":
                check_finite(source, str(path), first)  # before the cast: the message shows the source's value
            out = buffers.get("store", count * dim, store_dtype).reshape(count, dim)
            with np.errstate(over="ignore"):  # overflow shows up as inf, reported just below
                np.copyto(out, source, casting="unsafe")
            check_finite(out, str(path), first)
            write(first, out)
    finally:
        os.close(fd)


def _first_txt_dim(folder: Path) -> int:
    files = _frame_files(folder)
    if not files:
        raise MeidBenchError(f"{folder}: no frame files; a txt-dir video holds one file per frame")
    try:
        return len(files[0].read_text().split())
    except (OSError, UnicodeDecodeError) as exc:
        raise MeidBenchError(f"{files[0]}: unreadable ({exc})") from None


def pack_features(split: Any, source: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
                  dtype: str = "float32", workers: int = 4, allow_missing: bool = False, frame_labels: bool = False,
                  fps: float | None = None, extractor: str = "", force: bool = False,
                  progress: Callable[[int], None] | None = None) -> PackReport:
    """Pack the features of every video of ``split`` found under ``source`` into the store ``out``.

    Videos without features are an error listing the first few, unless ``allow_missing`` (then recorded in the
    store). ``frame_labels`` stores per-frame labels from the segments, frames placed at ``fps`` when given, else
    spread evenly over each video's duration. ``progress`` is called with the number of videos just written.
    """
    source = Path(source)
    if fmt not in PACK_FORMATS:
        raise MeidBenchError(f"--format {fmt!r}: choose one of {', '.join(PACK_FORMATS)}")
    _store_dtype(dtype)
    check_number(fps, "--fps", low=0, low_open=True, allow_none=True)
    if not source.is_dir():
        raise MeidBenchError(f"{source}: no such folder of feature files (--source)")
    out = Path(out)
    if out.exists() and not force:
        raise MeidBenchError(f"{out}: the output file already exists; pass --force to replace it or choose another "
                             "--out")
    videos = split_video_table(split)
    wanted = set(videos["video_id"])
    present = {}
    ignored = 0
    for entry in os.scandir(source):
        name = entry.name if fmt == "txt-dir" else (entry.name[:-4] if entry.name.endswith(".npy") else None)
        if name is None or name.startswith("."):
            continue
        if name in wanted:
            present[name] = Path(entry.path)
        else:
            ignored += 1
    missing = [v for v in videos["video_id"] if v not in present]
    if missing and not allow_missing:
        raise MeidBenchError(f"{source}: {len(missing)} of {len(videos)} videos of the split have no features "
                             f"(first: {', '.join(missing[:5])}); add them, or pass --allow-missing to record them "
                             "as missing")
    keep = videos[videos["video_id"].isin(present)].reset_index(drop=True)
    if keep.empty:
        raise MeidBenchError(f"{source}: none of the split's videos has features in format {fmt}")
    if frame_labels and fps is None and not np.isfinite(keep["duration"].to_numpy(dtype=float)).all():
        raise MeidBenchError(f"{split.path}: --frame-labels needs --fps or every video's duration; this split has "
                             "videos without a duration")

    # Pre-pass: sizes from headers / folder listings only, so the store is laid out contiguously.
    counts = np.zeros(len(keep), dtype=np.int64)
    headers: list[_NpyHeader | None] = [None] * len(keep)
    dim = None
    for row, video_id in enumerate(keep["video_id"].tolist()):
        path = present[video_id]
        if fmt == "txt-dir":
            if not path.is_dir():
                raise MeidBenchError(f"{path}: not a folder; format txt-dir holds one folder of frame files per video")
            counts[row] = len(_frame_files(path))
            if counts[row] == 0:
                raise MeidBenchError(f"{path}: no frame files; a txt-dir video holds one file per frame")
            if dim is None:
                dim = _first_txt_dim(path)
        else:
            headers[row] = header = _npy_header(path)
            counts[row], video_dim = _check_shape(path, fmt, header.shape, header.dtype)
            if dim is None:
                dim = video_dim
            elif video_dim != dim:
                raise MeidBenchError(f"{path}: features of dimension {video_dim}, the other videos have {dim}")
    assert dim is not None
    if dim < 1:
        raise MeidBenchError(f"{present[keep['video_id'][0]]}: the first frame holds no numbers")
    check_free_space(out, float(counts.sum()) * dim * _store_dtype(dtype).itemsize, "write elsewhere or use "
                     "--dtype float16")

    workers = max(1, int(workers))
    num_classes = split.num_classes if frame_labels else None
    params = {"source_format": fmt, "frame_labels_placed_by": ("fps" if fps else "duration") if frame_labels else ""}
    ids = [str(v) for v in keep["video_id"]]
    segments = (list(zip(keep["duration"].to_numpy(dtype=float), keep["segment_classes"], keep["segment_starts"],
                         keep["segment_ends"])) if frame_labels else None)

    def labels_of(row: int, count: int) -> np.ndarray | None:
        if segments is None:
            return None
        duration, classes, starts, ends = segments[row]
        return pack_frame_labels(active_classes(classes, starts, ends, frame_times(count, fps, duration),
                                                split.num_classes))

    buffers = _Buffers()

    def pack_npy(row: int, position: int) -> None:  # in a worker thread: read, check, write in place
        path = present[ids[row]]
        labels = labels_of(row, int(counts[row]))

        def write(first: int, frames: np.ndarray) -> None:
            piece = None if labels is None else labels[first:first + len(frames)]
            writer.write_rows(position, first, frames, piece, source=str(path), checked=True)

        _copy_npy(path, headers[row], fmt, dim, dtype, buffers, write)

    with FeatureStoreWriter(out, dim, dtype, total_frames=int(counts.sum()), split_checksum=split.checksum,
                            benchmark=str(split.manifest.get("benchmark", "")), fps=fps,
                            generator=extractor or f"packed from {fmt}", simulated=False,
                            num_classes=num_classes, params=params, force=force) as writer:
        positions = [writer.reserve(video_id, int(count), str(present[video_id]))
                     for video_id, count in zip(ids, counts)]
        if fmt == "txt-dir" and workers > 1:
            executor: futures.Executor = futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork"))
        else:
            executor = futures.ThreadPoolExecutor(workers)
        try:  # the executor stops (its running tasks done) before the writer commits or aborts

            def submit(row: int) -> futures.Future:
                if fmt == "txt-dir":
                    return executor.submit(_load, present[ids[row]], fmt, dim, dtype)
                return executor.submit(pack_npy, row, positions[row])

            window: deque = deque()
            rows = iter(range(len(ids)))
            for row in rows:  # a bounded window of videos in flight: memory stays flat
                window.append((row, submit(row)))
                if len(window) >= 2 * workers:
                    break
            while window:
                row, future = window.popleft()
                next_row = next(rows, None)
                if next_row is not None:
                    window.append((next_row, submit(next_row)))
                frames = future.result()
                if frames is not None:  # text: parsed in a worker process, written here
                    writer.write_video(positions[row], frames, labels_of(row, len(frames)),
                                       source=str(present[ids[row]]), checked=True)
                if progress is not None:
                    progress(1)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        writer.record_missing(missing)
    return PackReport(path=out, videos=len(keep), frames=int(counts.sum()), dim=dim, dtype=str(dtype),
                      missing=missing, ignored=ignored)
