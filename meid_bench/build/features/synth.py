"""The proxy-feature simulator: SIMULATED frame features driven by a split's real temporal annotations.

Three versions (``SynthConfig.version``, recorded in the store): v1, described here, v2
(:mod:`meid_bench.build.features.synth_v2`: composed classes, temporal signatures mirrored for opposite verbs,
correlated noise, count-invariant frame norms, per-class difficulty) and v3 (v2 whose mirrored pairs also share
their difficulty, so they differ only in order). v1 and v2 stay byte-for-byte reproducible.

No video is looked at. Each video becomes ``round(duration * fps)`` frames; frame ``t`` (centre time
``(t + 0.5) / fps``) is the sum of

- the prototype of every class whose segment covers that instant, plus this video's own variation of that class
  (``instance_scale``); prototypes partly share a few common factors (``class_overlap``), as related actions share
  objects and motions;
- a per-video context: embeddings of the video's scene and subject where the split has those columns, and a
  video-specific vector (``context_scale``);
- a background prototype on frames where no class is active (``background_scale``);
- Gaussian noise (``noise``, the expected norm of the per-frame noise vector).

Vector norms are in units of a prototype (``prototype_scale`` = 1 by default). Because frames follow the annotated
segments, the per-class frame counts reproduce the frame-level imbalance of the annotations. Videos without a
duration take ``default_duration``; videos with labels but no segments (VideoLT) show every label on every frame.
Random streams are keyed by the seed and the video id, so the output bytes depend only on the split and the knobs.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from meid_bench.bounds import check_seed
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import check_free_space
from meid_bench.build.features.frames import active_classes, frame_times, num_frames_for, pack_frame_labels
from meid_bench.build.features.pack import split_video_table
from meid_bench.build.features.store import FeatureStoreWriter, _store_dtype

GENERATOR = "meid-bench synth (SIMULATED proxy features, not extracted from video)"
_CONTEXT_COLUMNS = ("scene", "subject")


V1_KNOBS = ("dim", "fps", "seed", "noise", "prototype_scale", "instance_scale", "class_overlap", "context_scale",
            "background_scale", "default_duration", "dtype")  # a v1 store records exactly these (its bytes stay v1's)
VERSIONS = (1, 2, 3)
CHARADES_BENCHMARKS = ("charadeslt", "charadesegolt")  # v2 and v3 compose their classes from the Charades mapping


@dataclass(frozen=True)
class SynthConfig:
    """The simulator's knobs (see the module docstring and docs/features.md). The last three are v2's."""

    version: int = 1
    dim: int = 256
    fps: float = 4.0
    seed: int = 0
    noise: float = 2.0
    prototype_scale: float = 1.0
    instance_scale: float = 1.5
    class_overlap: float = 0.6
    context_scale: float = 1.5
    background_scale: float = 1.0
    default_duration: float = 30.0
    dtype: str = "float16"
    temporal_scale: float = 1.5  # v2: amplitude of a class's course along its verb's direction over a segment
    noise_time_constant: float = 2.0  # v2: seconds; AR(1) correlation exp(-1 / (fps * this)) between frames
    difficulty_spread: float = 0.4  # v2: per-class variation scale exp(spread * z), z ~ N(0, 1) per class key

    def params(self) -> dict[str, Any]:
        """The knobs a store records: v1's exactly as v1 recorded them; v2 and v3 add ``version`` and their own."""
        if self.version == 1:
            return {name: getattr(self, name) for name in V1_KNOBS}
        return asdict(self)

    def validate(self) -> None:
        _store_dtype(self.dtype)
        if self.version not in VERSIONS:
            raise MeidBenchError(f"--version {self.version}: choose one of {', '.join(map(str, VERSIONS))}")
        if self.dim < 2:
            raise MeidBenchError(f"--dim {self.dim}: needs at least 2 dimensions")
        check_seed(self.seed)
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise MeidBenchError(f"--fps {self.fps}: must be a positive number of frames per second")
        if not 0.0 <= self.class_overlap < 1.0:
            raise MeidBenchError(f"--class-overlap {self.class_overlap}: must lie in [0, 1)")
        if not (self.default_duration > 0 and math.isfinite(self.default_duration)):
            raise MeidBenchError(f"--default-duration {self.default_duration}: must be positive seconds")
        for name in ("noise", "prototype_scale", "instance_scale", "context_scale", "background_scale",
                     "temporal_scale", "noise_time_constant", "difficulty_spread"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise MeidBenchError(f"--{name.replace('_', '-')} {value}: must be a finite number >= 0")


def _rng(seed: int, stream: int, key: str = "") -> np.random.Generator:
    # Keyed by content, never by position: a video's frames do not depend on which other videos exist.
    words = np.frombuffer(hashlib.sha256(key.encode("utf-8")).digest(), dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream, *words]))


def _unit(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def class_prototypes(config: SynthConfig, num_classes: int) -> np.ndarray:
    """[C, dim] class prototypes of norm ``prototype_scale``, sharing ``class_overlap`` of their energy with a few
    common factors (two per class out of max(8, C // 8))."""
    rng = _rng(config.seed, 0, "prototypes")
    own = _unit(rng, num_classes, config.dim)
    factors = _unit(rng, max(8, num_classes // 8), config.dim)
    picks = np.stack([rng.choice(len(factors), size=2, replace=False) for _ in range(num_classes)])
    shared = factors[picks].sum(axis=1)
    shared /= np.linalg.norm(shared, axis=1, keepdims=True)
    mixed = math.sqrt(1 - config.class_overlap) * own + math.sqrt(config.class_overlap) * shared
    return config.prototype_scale * mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def background_prototype(config: SynthConfig) -> np.ndarray:
    return config.background_scale * _unit(_rng(config.seed, 1, "background"), 1, config.dim)[0]


def _context(config: SynthConfig, video: Any, columns: list[str]) -> np.ndarray:
    parts = [_unit(_rng(config.seed, 2, f"video:{video['video_id']}"), 1, config.dim)[0]]
    for column in columns:
        value = video[column]
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
            continue
        parts.append(_unit(_rng(config.seed, 3, f"{column}:{value}"), 1, config.dim)[0])
    return config.context_scale * np.sum(parts, axis=0) / math.sqrt(len(parts))


def video_activity(video: Any, num_frames: int, fps: float, num_classes: int) -> np.ndarray:
    """bool [frames, classes]: the classes active on each frame (all labels everywhere when there are no segments)."""
    if len(video["segment_classes"]):
        times = frame_times(num_frames, fps)
        return active_classes(video["segment_classes"], video["segment_starts"], video["segment_ends"], times,
                              num_classes)
    active = np.zeros((num_frames, num_classes), dtype=bool)
    if len(video["labels"]):
        active[:, np.asarray(video["labels"], dtype=np.int64)] = True
    return active


def active_sum(active: np.ndarray, looks: np.ndarray, dim: int) -> np.ndarray:
    """float64 [T, dim]: each frame's sum of the looks of its active classes, added in class order.

    Elementwise adds, not a matrix product: BLAS kernels order (and fuse) the additions by instruction set, so
    ``active @ looks`` could give other bits on another CPU; this sum is the same on every machine."""
    out = np.zeros((len(active), dim))
    for column in range(active.shape[1]):
        out[active[:, column]] += looks[column]
    return out


def synthesize_video(config: SynthConfig, video: Any, prototypes: np.ndarray, background: np.ndarray,
                     context_columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One video's simulated frames float32 [T, dim] and its activity matrix bool [T, C]."""
    duration = float(video["duration"])
    if not (math.isfinite(duration) and duration > 0):
        duration = config.default_duration
    frames = num_frames_for(duration, config.fps)
    active = video_activity(video, frames, config.fps, len(prototypes))
    rng = _rng(config.seed, 4, f"video:{video['video_id']}")
    noise = rng.standard_normal((frames, config.dim), dtype=np.float32) * np.float32(config.noise /
                                                                                   math.sqrt(config.dim))
    columns = np.flatnonzero(active.any(axis=0))
    looks = prototypes[columns]
    if len(columns):
        looks = looks + config.instance_scale * _unit(rng, len(columns), config.dim)
    out = active_sum(active[:, columns], looks, config.dim)
    out += _context(config, video, context_columns)
    out[~active.any(axis=1)] += background
    return (out + noise).astype(np.float32), active


def synthesize_features(split: Any, out: str | os.PathLike, config: SynthConfig = SynthConfig(), *,
                        frame_labels: bool = False, force: bool = False, annotations: str | os.PathLike | None = None,
                        progress: Callable[[int], None] | None = None) -> Path:
    """Write a simulated feature store for every video of ``split`` (train, val, test order). Returns the path.

    ``annotations``: the folder with the Charades class mapping, for v2 and v3 on CharadesLT / CharadesEgoLT (required
    there); v1 ignores it.
    """
    config.validate()
    videos = split_video_table(split)
    context_columns = [c for c in _CONTEXT_COLUMNS if c in videos.columns]
    durations = videos["duration"].to_numpy(dtype=np.float64)
    durations = np.where(np.isfinite(durations) & (durations > 0), durations, config.default_duration)
    check_free_space(out, float(np.sum(durations * config.fps)) * config.dim * np.dtype(config.dtype).itemsize,
                     "lower --fps, --dim or --default-duration, or write elsewhere")
    total = sum(num_frames_for(d, config.fps) for d in durations)
    background = background_prototype(config)
    params = dict(config.params(), context_columns=context_columns)
    if config.version == 1:
        prototypes = class_prototypes(config, split.num_classes)

        def make(row: dict) -> tuple[np.ndarray, np.ndarray]:
            return synthesize_video(config, row, prototypes, background, context_columns)
    else:
        make, extra = _v2_generator(config, split, background, context_columns, annotations)
        params.update(extra)
    with FeatureStoreWriter(out, config.dim, config.dtype, total_frames=total, split_checksum=split.checksum,
                            benchmark=str(split.manifest.get("benchmark", "")), fps=config.fps, generator=GENERATOR,
                            simulated=True, num_classes=split.num_classes if frame_labels else None, params=params,
                            force=force) as writer:
        for video in videos.itertuples(index=False):
            row = video._asdict()
            frames, active = make(row)
            writer.add(str(row["video_id"]), frames, pack_frame_labels(active) if frame_labels else None)
            if progress is not None:
                progress(1)
    return Path(out)


def _v2_generator(config: SynthConfig, split: Any, background: np.ndarray, context_columns: list[str],
                  annotations: str | os.PathLike | None) -> tuple[Callable[[dict], tuple[np.ndarray, np.ndarray]],
                                                                 dict[str, Any]]:
    from meid_bench.build.features import synth_v2

    benchmark = str(split.manifest.get("benchmark", ""))
    class_keys = [str(key) for key in split.classes["class_key"]]
    structure = None
    if annotations is not None:
        structure = synth_v2.read_class_structure(annotations, class_keys)
    elif benchmark in CHARADES_BENCHMARKS:
        raise MeidBenchError(f"simulator v{config.version} on {benchmark} composes classes from the Charades class mapping: pass "
                             f"--annotations DIR, the folder with {synth_v2.MAPPING_FILE}, {synth_v2.VERB_FILE} and "
                             f"{synth_v2.OBJECT_FILE}")
    model = synth_v2.build_class_model(config, class_keys, structure, lambda stream, key: _rng(config.seed, stream,
                                                                                               key))
    unit_background = background / max(np.linalg.norm(background), 1e-12)

    def make(row: dict) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(config.seed, 25, f"video:{row['video_id']}")
        return synth_v2.synthesize_video_v2(config, row, model, unit_background,
                                            _context(config, row, context_columns), rng)

    extra = {"class_model": "charades-mapping" if structure is not None else "v1-prototypes",
             "annotation_checksums": structure.checksums if structure is not None else {},
             "mirrored_pairs": [list(pair) for pair in model.mirrored_pairs]}
    return make, extra


def class_frame_counts(store: Any, video_ids: Any) -> np.ndarray:
    """Per-class number of labelled frames over ``video_ids`` (a store with per-frame labels)."""
    counts = np.zeros(store.num_classes, dtype=np.int64)
    for video_id in video_ids:
        counts += store.read_frame_labels(video_id).sum(axis=0, dtype=np.int64)
    return counts
