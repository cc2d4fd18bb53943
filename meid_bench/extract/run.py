"""``features extract``: decode in worker threads, run the backbone in batches, write a resumable store.

Worker threads read and resize-crop a bounded window of videos ahead (PyAV, Pillow and torch release the GIL while
they work) while the main thread runs the backbone under ``torch.inference_mode`` (float16 on CUDA) and hands each
finished video to the work folder (:mod:`.write`). A batch never mixes videos: a video's features depend only on the
video, the backbone, its weights, ``--batch`` and the device, never on which other videos a run holds, so a resumed
extraction gives the same bytes as an uninterrupted one (on the CPU; GPU kernels are not bit-reproducible).
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import logging
import math
import platform
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from meid_bench.build.features import default_feature_path
from meid_bench.build.features.pack import split_video_table
from meid_bench.build.features.store import _store_dtype, check_finite
from meid_bench.build.split_io import load_split
from meid_bench.devices import resolve_device
from meid_bench.bounds import EXTRACT_BATCH_MAX, FPS_MAX, WORKERS_MAX, check_int_range
from meid_bench.errors import MeidBenchError, warn
from meid_bench.outputs import Input, Output, check_outputs, source_input, split_input
from meid_bench.train.environment import device_record
from meid_bench.extract.backbones import build_backbone
from meid_bench.extract.catalog import BackboneInfo, Preprocessing, backbone_info
from meid_bench.extract.decode import (Decoded, decoder_description, find_inputs, frame_folder_files, read_frame_folder,
                                       read_video, video_duration)
from meid_bench.extract.preprocess import normalize, resize_crop
from meid_bench.extract.sample import clip_instants, feature_instants
from meid_bench.extract.spec import recommended_fps
from meid_bench.extract.weights import RANDOM, load_weights, resolve_weights
from meid_bench.extract.write import WorkFolder, source_identity

logger = logging.getLogger(__name__)

@dataclass
class ExtractOptions:
    """What ``meid-bench features extract`` takes. Exactly one of ``videos`` (a folder of ``<id>.<container>``
    files) and ``frames`` (a folder of ``<id>/`` folders of numbered images taken ``frames_fps`` per second)."""

    split: Path
    backbone: str
    videos: Path | None = None
    frames: Path | None = None
    out: Path | None = None  # default: <split>/features.h5
    weights: str = "default"
    fps: float | None = None  # default: the benchmark's specification (spec.SPEC_FPS)
    frames_fps: float = 24.0
    device: str = "auto"
    batch: int = 32
    workers: int = 4
    dtype: str = "float16"
    resume: bool = False
    force: bool = False
    allow_missing: bool = False
    # Tests: narrower or shallower networks and smaller inputs (random weights or an unpublished file only).
    width: int = 64
    blocks: Sequence[int] | None = None
    preprocessing: Preprocessing | None = None
    flush_seconds: float = 60.0  # a kill loses at most about this much work


@dataclass
class ExtractReport:
    """What an extraction wrote, and where its time went."""

    path: Path
    videos: int
    frames: int
    dim: int
    resumed: int  # videos found finished in the work folder
    missing: list[tuple[str, str]] = field(default_factory=list)  # (video id, reason)
    ignored: int = 0  # entries of the input folder that are not videos of the split
    short: int = 0  # videos whose source ends more than one feature frame before the split's duration
    decoded_frames: int = 0  # source frames decoded (videos) or images read (frame folders), this run
    decode_seconds: float = 0.0  # summed over worker threads
    backbone_seconds: float = 0.0  # preprocessing on the device and the forward passes
    wall_seconds: float = 0.0


@torch.inference_mode()
def embed(model: torch.nn.Module, decoded: Decoded, pre: Preprocessing, kind: str, batch: int,
          device: torch.device, half: bool) -> np.ndarray:
    """Features float32 [instants, dim] of one video: ``batch`` frames (or clips) per forward pass."""
    frames = decoded.frames.to(device)
    rows = torch.from_numpy(decoded.rows).to(device)
    outputs = []
    for lo in range(0, len(rows), batch):
        x = normalize(frames[rows[lo:lo + batch]], pre)  # [b, 3, h, w] or, for clips, [b, L, 3, h, w]
        if kind == "clip":
            x = x.permute(0, 2, 1, 3, 4).contiguous()  # torchvision's clip layout [b, 3, L, h, w]
        outputs.append(model(x.half() if half else x).float())
    return torch.cat(outputs).cpu().numpy()


def _versions(kind: str, device: torch.device | None = None) -> dict[str, str]:
    """The software the features depend on; on a GPU also the CUDA and cuDNN versions torch runs with."""
    from meid_bench._version import __version__

    versions = {"meid_bench": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__}
    if device is not None and device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
        versions["cudnn"] = str(torch.backends.cudnn.version())
    if kind == "videos":
        import av

        versions["av"] = av.__version__
    else:
        import PIL

        versions["pillow"] = PIL.__version__
    return versions


class _Reader:
    """Reads one video's frames for the backbone (runs in a worker thread)."""

    def __init__(self, info: BackboneInfo, pre: Preprocessing, kind: str, fps: float, frames_fps: float) -> None:
        self.info, self.kind, self.fps, self.frames_fps = info, kind, fps, frames_fps
        self.transform = partial(resize_crop, pre=pre)

    def duration(self, source: Path, duration: float) -> float:
        if math.isfinite(duration) and duration > 0:
            return duration
        if self.kind == "videos":
            return video_duration(source)
        return len(frame_folder_files(source)) / self.frames_fps

    def __call__(self, source: Path, duration: float) -> tuple[Decoded, float, float]:
        started = time.perf_counter()
        duration = self.duration(source, duration)
        instants = feature_instants(duration, self.fps)
        if self.info.kind == "clip":
            instants = clip_instants(instants, self.info.clip_len, self.info.clip_fps)
        try:
            if self.kind == "videos":
                decoded = read_video(source, instants, self.transform)
            else:
                decoded = read_frame_folder(source, instants, self.transform, self.frames_fps)
        except MeidBenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a decoder raises on one bad file (Pillow's
            # DecompressionBombError, a truncated frame, an FFmpeg error) is a fact about that file: it becomes that
            # video's error (--allow-missing records it and goes on), not the end of the whole extraction.
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise MeidBenchError(f"{source}: cannot be decoded ({type(exc).__name__}{': ' + detail if detail else ''})"
                                 "; replace or remove it, or pass --allow-missing to record it as missing") from None
        return decoded, duration, time.perf_counter() - started


def _read_ahead(reader: _Reader, videos: list[tuple[str, Path, float]], workers: int) -> Iterator[tuple[str, Any]]:
    """(video id, reader's result or its MeidBenchError) in order, ``2 * workers`` videos read ahead by threads."""
    executor = futures.ThreadPoolExecutor(workers)
    try:
        window: deque = deque()
        for video_id, source, duration in videos:
            window.append((video_id, executor.submit(reader, source, duration)))
            if len(window) > 2 * workers:  # a bounded window in flight: memory stays flat
                yield _result(*window.popleft())
        while window:
            yield _result(*window.popleft())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _result(video_id: str, future: futures.Future) -> tuple[str, Any]:
    try:
        return video_id, future.result()
    except MeidBenchError as exc:
        return video_id, exc


def _check(options: ExtractOptions) -> str:
    if (options.videos is None) == (options.frames is None):
        raise MeidBenchError("give exactly one of --videos (a folder of video files) and --frames (a folder of frame "
                             "folders)")
    _store_dtype(options.dtype)
    for name in ("fps", "frames_fps"):
        value = getattr(options, name)
        if value is not None and not (math.isfinite(value) and 0 < value <= FPS_MAX):
            raise MeidBenchError(f"--{name.replace('_', '-')} {value}: must be a positive number of frames per second, "
                                 f"at most {FPS_MAX:g}")
    if options.batch < 1 or options.workers < 1:
        raise MeidBenchError("--batch and --workers must be at least 1")
    check_int_range(options.workers, "--workers", 1, WORKERS_MAX)
    check_int_range(options.batch, "--batch", 1, EXTRACT_BATCH_MAX)
    return "videos" if options.videos is not None else "frames"


def extract_features(options: ExtractOptions, progress: Callable[[int], None] | None = None,
                     start: Callable[[int], None] | None = None) -> ExtractReport:
    """Extract features for every video of the split into its feature store; see the module docstring. A resumed
    extraction says so in the log (``meid_bench.extract.run``).

    ``start`` is called once, before the first video, with the number of videos this call will read (not those
    without a source nor those a resumed extraction already has); ``progress`` then with each video read.
    A failure before any video is finished leaves no work folder behind (nothing to resume)."""
    started = time.perf_counter()
    kind = _check(options)
    split = load_split(options.split)
    benchmark = str(split.manifest.get("benchmark", ""))
    fps = options.fps if options.fps is not None else recommended_fps(benchmark)
    if fps is None:
        raise MeidBenchError(f"{options.split}: benchmark {benchmark!r} has no recommended frame rate; pass --fps")
    info = backbone_info(options.backbone)
    decoder = decoder_description(kind)
    videos = split_video_table(split)
    ids = [str(v) for v in videos["video_id"]]
    durations = dict(zip(ids, videos["duration"].astype(float).fillna(float("nan")).tolist()))
    source_root = options.videos if kind == "videos" else options.frames
    present, ignored = find_inputs(Path(source_root), ids, kind)
    absent = [v for v in ids if v not in present]
    if absent and not options.allow_missing:
        raise MeidBenchError(f"{source_root}: {len(absent)} of {len(ids)} videos of the split have no "
                             f"{'video file' if kind == 'videos' else 'frame folder'} (first: "
                             f"{', '.join(absent[:5])}); add them, or pass --allow-missing to record them as missing")
    out = Path(options.out) if options.out is not None else default_feature_path(options.split)
    # Before any heavy work (the work folder checks again): the output rule (outputs.py).
    inputs = [split_input(options.split), source_input(source_root, "--videos" if kind == "videos" else "--frames")]
    if Path(options.weights).is_file():
        inputs.append(Input(Path(options.weights), "--weights"))
    check_outputs([Output(out, "--out", "store")], inputs, options.force)

    weights = resolve_weights(info, options.weights)
    custom = options.width != 64 or options.blocks is not None or options.preprocessing is not None
    if custom and weights.label != RANDOM and not weights.label.startswith("file:"):
        raise MeidBenchError(f"the published {weights.label} weights need the published architecture and "
                             "preprocessing")
    if options.preprocessing is not None:
        weights = replace(weights, preprocessing=options.preprocessing)
    device = resolve_device(options.device)
    half = device.type == "cuda"
    model = build_backbone(info.name, options.width, options.blocks)
    load_weights(model, weights, info.name)
    model = model.to(device).half() if half else model.to(device)
    backbone = info.name if options.width == 64 and options.blocks is None else \
        f"{info.name}(width={options.width},blocks={list(options.blocks or [])})"
    sampling = {"fps": fps, "frames": "round(duration * fps), at least 1", "instant": "(t + 0.5) / fps",
                "duration": "split, else the source", "clip_len": info.clip_len, "clip_fps": info.clip_fps,
                "frames_fps": options.frames_fps if kind == "frames" else None}
    job = {"split_checksum": split.checksum, "backbone": backbone, "weights": weights.label,
           "weights_sha256": weights.sha256, "preprocessing": weights.preprocessing.describe(), "sampling": sampling,
           "input": kind, "decoder": decoder, "dtype": options.dtype, "batch": options.batch,
           "device": device.type, "device_name": device_record(device)["name"],
           "precision": "float16" if half else "float32", "versions": _versions(kind, device)}
    work = WorkFolder(out, job, resume=options.resume, force=options.force, flush_seconds=options.flush_seconds)
    report = ExtractReport(path=out, videos=0, frames=0, dim=model.dim, resumed=len(work.done), ignored=ignored)
    report.missing = [(v, "no source") for v in absent]
    if work.resumed:
        changed = work.forget_changed({v: source_identity(present[v]) for v in work.done if v in present})
        if changed:
            warn(f"{len(changed)} source(s) changed since they were extracted (size or modification time; first: "
                 f"{changed[0]}): extracted again")
            report.resumed = len(work.done)
        logger.info(f"resuming: {len(work.done)} videos already extracted in {work.folder}")
    todo = [v for v in ids if v in present and v not in work.done]
    if start is not None:
        start(len(todo))
    reader = _Reader(info, weights.preprocessing, kind, fps, options.frames_fps)
    store_dtype = _store_dtype(options.dtype)

    results = _read_ahead(reader, [(v, present[v], durations[v]) for v in todo], options.workers)
    finished = False
    try:
        for video_id, result in results:
            if isinstance(result, MeidBenchError):
                if not options.allow_missing:
                    raise result
                report.missing.append((video_id, str(result)))
            else:
                decoded, duration, seconds = result
                report.decoded_frames += decoded.decoded
                report.decode_seconds += seconds
                report.short += int(kind == "videos" and decoded.end < duration - 1.0 / fps)
                tick = time.perf_counter()
                features = embed(model, decoded, weights.preprocessing, info.kind, options.batch, device, half)
                report.backbone_seconds += time.perf_counter() - tick
                with np.errstate(over="ignore"):
                    features = features.astype(store_dtype)
                check_finite(features, f"{present[video_id]} ({backbone} features)")
                work.add(video_id, features, source_identity(present[video_id]))
            if progress is not None:
                progress(1)
        finished = True
    finally:
        results.close()  # stops the reading threads now, also on an error
        work.flush()  # also on an error or Ctrl-C: finished videos are kept for --resume
        if not finished and not work.resumed and not work.done:
            # Nothing of this run's own work folder is worth resuming: remove it, so that the next attempt (say
            # with --dtype float32) starts without --force.
            work.remove()

    attributes = {"backbone": backbone, "weights": weights.label, "weights_sha256": weights.sha256,
                  "preprocessing": json.dumps(job["preprocessing"], sort_keys=True),
                  "sampling": json.dumps(sampling, sort_keys=True), "decoder": decoder,
                  "versions": json.dumps(job["versions"], sort_keys=True), "device": device.type,
                  "device_name": job["device_name"], "precision": job["precision"]}
    params = {"input": kind, "batch": options.batch, "allow_missing": options.allow_missing}
    path = work.assemble(ids, model.dim, options.dtype, attributes, split_checksum=split.checksum,
                         benchmark=benchmark, fps=fps, generator=f"meid-bench features extract ({backbone}, "
                         f"{weights.label})", simulated=False, params=params)
    kept = [v for v in ids if v in work.done]
    report.videos = len(kept)
    report.frames = sum(work.done[v][2] for v in kept)
    work.remove()
    report.path = path
    report.wall_seconds = time.perf_counter() - started
    return report
