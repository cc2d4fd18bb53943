"""Pack per-video feature files into a feature store: ``npy``, ``i3d`` and ``txt-dir`` sources.

- ``npy``: ``<source>/<video_id>.npy`` holding [T, D] (as VideoLT ships its features).
- ``i3d``: ``<source>/<video_id>.npy`` holding [T, 1, 1, D] (the common I3D release).
- ``txt-dir``: ``<source>/<video_id>/`` with one file per frame holding one whitespace-separated vector, ordered
  by the number that ends the file name (the official Charades two-stream fc7 release).

Packing streams: a pre-pass reads only headers (or lists folders) to size the store, then worker threads (processes
for text, whose parsing holds the GIL) load and check a bounded window of videos while the main thread writes them
in split order. Memory stays flat whatever the number of videos.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import re
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


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    # The header only; the frames are loaded later, by a worker.
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:  # rare newer versions: let numpy parse it
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                shape, dtype = array.shape, array.dtype
                del array
    except _NPY_ERRORS as exc:
        raise MeidBenchError(f"{path}: not a readable .npy file ({exc}); re-export it with numpy.save") from None
    return tuple(shape), np.dtype(dtype)


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
            shape, array_dtype = _npy_header(path)
            counts[row], video_dim = _check_shape(path, fmt, shape, array_dtype)
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
    if fmt == "txt-dir" and workers > 1:
        executor: futures.Executor = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    else:
        executor = futures.ThreadPoolExecutor(workers)
    num_classes = split.num_classes if frame_labels else None
    params = {"source_format": fmt, "frame_labels_placed_by": ("fps" if fps else "duration") if frame_labels else ""}
    try:
        with FeatureStoreWriter(out, dim, dtype, total_frames=int(counts.sum()), split_checksum=split.checksum,
                                benchmark=str(split.manifest.get("benchmark", "")), fps=fps,
                                generator=extractor or f"packed from {fmt}", simulated=False,
                                num_classes=num_classes, params=params, force=force) as writer:
            ids = [str(v) for v in keep["video_id"]]
            window: deque = deque()
            rows = iter(range(len(ids)))
            for row in rows:  # a bounded window of videos in flight: memory stays flat
                window.append((row, executor.submit(_load, present[ids[row]], fmt, dim, dtype)))
                if len(window) >= 2 * workers:
                    break
            while window:
                row, future = window.popleft()
                next_row = next(rows, None)
                if next_row is not None:
                    window.append((next_row, executor.submit(_load, present[ids[next_row]], fmt, dim, dtype)))
                frames = future.result()
                labels = None
                if frame_labels:
                    video = keep.iloc[row]
                    times = frame_times(len(frames), fps, float(video["duration"]))
                    labels = pack_frame_labels(active_classes(video["segment_classes"], video["segment_starts"],
                                                              video["segment_ends"], times, split.num_classes))
                writer.add(ids[row], frames, labels, source=str(present[ids[row]]), checked=True)
                if progress is not None:
                    progress(1)
            writer.record_missing(missing)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return PackReport(path=out, videos=len(keep), frames=int(counts.sum()), dim=dim, dtype=str(dtype),
                      missing=missing, ignored=ignored)
