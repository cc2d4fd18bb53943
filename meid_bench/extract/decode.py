"""Reading frames: video files with PyAV (FFmpeg bundled in its wheels), folders of numbered images with Pillow.

Both return the source frames showing the wanted instants (:mod:`.sample` says which), each distinct frame once,
already passed through the resize-and-crop step, plus for every instant the row of its frame. A video is decoded
once from its start, stopping after the last wanted instant; only the frames shown at a wanted instant are converted
to RGB. Any failure to read a source is a :class:`MeidBenchError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from meid_bench.errors import MeidBenchError
from meid_bench.extract.sample import TIME_TOLERANCE, frames_showing

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp", ".wmv")
EXTRA_HINT = "pip install 'meid-bench[extract]'"
Transform = Callable[[torch.Tensor], torch.Tensor]


def require_av():
    try:
        import av
    except ImportError:
        raise MeidBenchError(f"reading video files needs PyAV, which is not installed: {EXTRA_HINT}") from None
    return av


def require_pillow():
    try:
        import PIL.Image
    except ImportError:
        raise MeidBenchError(f"reading frame folders needs Pillow, which is not installed: {EXTRA_HINT}") from None
    return PIL.Image


def decoder_description(kind: str) -> str:
    """Name and version of what reads the sources (recorded in the store)."""
    if kind == "videos":
        av = require_av()
        codec = ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))
        return f"pyav {av.__version__} (FFmpeg libavcodec {codec})"
    import PIL

    require_pillow()
    return f"pillow {PIL.__version__}"


def find_inputs(folder: Path, video_ids: list[str], kind: str) -> tuple[dict[str, Path], int]:
    """Map each video id to its source: ``<id>.<container>`` files (``kind="videos"``) or ``<id>/`` folders of frames
    (``kind="frames"``). Returns (found, number of other entries, which are ignored)."""
    if not folder.is_dir():
        option = "--videos" if kind == "videos" else "--frames"
        raise MeidBenchError(f"{folder}: no such folder ({option})")
    wanted = set(video_ids)
    found: dict[str, Path] = {}
    ignored = 0
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        if kind == "videos":
            stem, suffix = os.path.splitext(entry.name)
            key = stem if suffix.lower() in VIDEO_SUFFIXES and entry.is_file() else None
        else:
            key = entry.name if entry.is_dir() else None
        if key is None or key not in wanted:
            ignored += 1
            continue
        if key in found:
            raise MeidBenchError(f"{folder}: two sources for video {key} ({found[key].name} and {entry.name}); "
                                 "keep one")
        found[key] = Path(entry.path)
    return found, ignored


@dataclass
class Decoded:
    """The frames a video's instants need, and where each instant finds its frame."""

    frames: torch.Tensor  # uint8 [N, 3, h, w]: distinct source frames, resized and cropped
    rows: np.ndarray  # int64, shaped like the instants: row of ``frames`` shown at each instant
    decoded: int  # source frames decoded
    end: float  # seconds from the first source frame's start to the end of the last one decoded


class _Collector:
    """Gathers RGB frames [H, W, 3] and runs the transform on groups of them (memory stays small)."""

    def __init__(self, transform: Transform, group: int = 32) -> None:
        self.transform, self.group = transform, group
        self.pending: list[np.ndarray] = []
        self.done: list[torch.Tensor] = []
        self.count = 0

    def add(self, rgb: np.ndarray) -> int:
        self.pending.append(rgb)
        self.count += 1
        if len(self.pending) >= self.group:
            self._flush()
        return self.count - 1

    def _flush(self) -> None:
        start = 0
        while start < len(self.pending):  # runs of equal size (a stream may change resolution)
            stop = start + 1
            while stop < len(self.pending) and self.pending[stop].shape == self.pending[start].shape:
                stop += 1
            block = torch.from_numpy(np.stack(self.pending[start:stop])).permute(0, 3, 1, 2)
            self.done.append(self.transform(block))
            start = stop
        self.pending = []

    def result(self) -> torch.Tensor:
        self._flush()
        return torch.cat(self.done) if len(self.done) > 1 else self.done[0]


def _sorted(instants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = np.asarray(instants, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    return flat[order], order


def _unsort(rows_sorted: np.ndarray, order: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = np.empty(len(order), dtype=np.int64)
    rows[order] = rows_sorted
    return rows.reshape(shape)


def _decode_error(path: Path, exc: BaseException) -> MeidBenchError:
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return MeidBenchError(f"{path}: cannot decode this video ({detail}); replace the file, or pass --allow-missing "
                          "to skip it and record it as missing")


def video_duration(path: Path) -> float:
    """Duration in seconds from the container's metadata (for splits that carry no durations)."""
    av = require_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MeidBenchError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return float(container.duration) / av.time_base
            if stream.frames and stream.average_rate:
                return float(stream.frames / stream.average_rate)
    except av.error.FFmpegError as exc:
        raise _decode_error(path, exc) from None
    raise MeidBenchError(f"{path}: the container does not say how long the video is; remux it (ffmpeg -i IN -c copy "
                         "OUT.mp4) or give the split durations")


def read_video(path: Path, instants: np.ndarray, transform: Transform) -> Decoded:
    """Decode ``path`` and keep the frames showing ``instants`` (seconds from the first frame's start)."""
    av = require_av()
    wanted, order = _sorted(instants)
    rows = np.empty(len(wanted), dtype=np.int64)
    collector = _Collector(transform)
    next_wanted = 0
    decoded = 0
    previous = None
    origin = start = None
    step = 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MeidBenchError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # FFmpeg's own threads; the output does not depend on them
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            step = 1.0 / rate if rate > 0 else 0.0
            for frame in container.decode(stream):
                time = frame.time if frame.time is not None else decoded * step
                origin = time if origin is None else origin
                time = max(time - origin, start if start is not None else 0.0)  # never backwards
                decoded += 1
                if previous is not None and wanted[next_wanted] + TIME_TOLERANCE < time:
                    # The previous frame is shown until this one starts: it serves the instants before ``time``.
                    row = collector.add(previous.to_ndarray(format="rgb24"))
                    while next_wanted < len(wanted) and wanted[next_wanted] + TIME_TOLERANCE < time:
                        rows[next_wanted] = row
                        next_wanted += 1
                    if next_wanted == len(wanted):
                        break
                previous, start = frame, time
            if next_wanted < len(wanted):  # instants at or after the last frame's start: the last frame
                if previous is None:
                    raise MeidBenchError(f"{path}: no video frame could be decoded; replace the file, or pass "
                                         "--allow-missing to skip it and record it as missing")
                rows[next_wanted:] = collector.add(previous.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as exc:
        raise _decode_error(path, exc) from None
    return Decoded(collector.result(), _unsort(rows, order, np.shape(instants)), decoded, (start or 0.0) + step)


def frame_folder_files(folder: Path) -> list[Path]:
    """The images of a frame folder in frame-number order (the number ending each file name)."""
    from meid_bench.build.features.pack import _frame_files

    files = _frame_files(folder)
    if not files:
        raise MeidBenchError(f"{folder}: no frame images; a frame folder holds one image per frame, named by number "
                             "(VIDEO-000001.jpg)")
    return files


def read_frame_folder(folder: Path, instants: np.ndarray, transform: Transform, frames_fps: float) -> Decoded:
    """Load the images showing ``instants`` from a folder of frames taken ``frames_fps`` per second."""
    image = require_pillow()
    files = frame_folder_files(folder)
    wanted = np.asarray(instants, dtype=np.float64)
    index = frames_showing(np.arange(len(files)) / frames_fps, wanted)
    needed, rows = np.unique(index, return_inverse=True)
    collector = _Collector(transform)
    for k in needed:
        try:
            with image.open(files[k]) as picture:
                collector.add(np.asarray(picture.convert("RGB")))
        except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as exc:
            # DecompressionBombError: a header claiming more than twice Pillow's pixel limit (not an OSError).
            detail = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise MeidBenchError(f"{files[k]}: not a readable image ({type(exc).__name__}: {detail}); replace "
                                 "it, or pass --allow-missing to skip the video and record it as missing") from None
    return Decoded(collector.result(), rows.reshape(wanted.shape).astype(np.int64), len(needed),
                   len(files) / frames_fps)
