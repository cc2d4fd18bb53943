"""Simulator v2: proxy features with class structure from the annotations, temporal order, and positive controls.

v2 keeps v1's time axis (frames follow the real annotated segments) and per-video context, and changes how a frame
is made, so that the properties real video features have, and that MEID's parts rely on, are present:

- **Composed classes.** A class's prototype mixes an object vector, a verb vector and a vector of its own
  (Charades' class -> (object, verb) mapping, read from the annotation folder): classes that share an object or a
  verb share appearance, as "opening a door" and "closing a door" share the door in real features.
- **Temporal signatures, mirrored for opposite verbs.** Over each of its segments a class moves along a direction of
  its verb, from -1 to +1 times ``temporal_scale`` (the change from a start state to an end state). The opposite
  verb of a pair (``MIRRORED_VERBS``: open/close, take/put, ...) runs the same path backwards, and the two classes
  of a mirrored pair (same object, opposite verbs) share their whole static prototype: their frames have the same
  distribution, and only their order tells them apart. An order-blind model cannot separate them; an order-aware
  one can (the positive control of docs/features.md).
- **Temporally correlated noise**: AR(1) with time constant ``noise_time_constant`` seconds, as consecutive frames
  of a real video are alike.
- **Count-invariant combination.** The classes active on a frame (their looks plus signatures) are summed and the
  sum scaled to a fixed norm, and a frame without action carries a background vector of that same norm: a frame's
  norm does not say how many actions it shows (in v1 it grew with them, and attention learnt to rank by it).
- **Per-class difficulty independent of frequency**: each class's per-video variation is scaled by
  exp(``difficulty_spread`` z), z ~ N(0, 1) drawn from the class key, not from its rank or count.

**Version 3** is v2 with one change: the two classes of a mirrored pair draw their difficulty z from the pair's
key, not each from its own. In v2 the pair's variation scales differed (a median ratio of about 0.76), and since
every action frame is scaled to one norm, so did the effective amplitude of their shared prototype: an order-blind
cue. In v3 the two classes' frames differ in nothing but the direction of their course, so only order separates
them. Every other class, and every random stream, is v2's.

Benchmarks without the Charades mapping (VideoLT) fall back to v1's prototypes with no verb signature; the other
mechanisms apply. Every random stream is keyed by the seed and by content (video id, class key, object and verb
ids), so the same split, annotations and knobs give the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meid_bench.build.features.frames import frame_times, num_frames_for
from meid_bench.build.features.synth import _unit, class_prototypes
from meid_bench.errors import MeidBenchError

MAPPING_FILE = "Charades_v1_mapping.txt"
VERB_FILE = "Charades_v1_verbclasses.txt"
OBJECT_FILE = "Charades_v1_objectclasses.txt"
# Verbs whose actions run the same course in opposite directions (an English-language table of ours, applied to the
# verbs the verb file names). The first of each pair runs its signature forwards, the second backwards.
MIRRORED_VERBS = (("open", "close"), ("take", "put"), ("dress", "undress"), ("sit", "stand"), ("lie", "awaken"))


@dataclass(frozen=True)
class ClassStructure:
    """The Charades class -> (object, verb) mapping for the split's classes, and the verb names."""

    objects: list[str]  # object id per class (class_id order)
    verbs: list[str]  # verb id per class
    verb_names: dict[str, str]  # verb id -> name
    checksums: dict[str, str]  # file name -> sha256 of the files read

    def canonical_verb(self, verb: str) -> tuple[str, float]:
        """(the verb id that stands for the verb's pair, +1 forwards / -1 backwards)."""
        name = self.verb_names.get(verb, "")
        by_name = {v: k for k, v in self.verb_names.items()}
        for first, second in MIRRORED_VERBS:
            if name == second and first in by_name:
                return by_name[first], -1.0
        return verb, 1.0

    def mirrored_pairs(self, class_keys: list[str]) -> list[tuple[str, str]]:
        """Class-key pairs (forwards, backwards) with the same object and mirrored verbs."""
        pairs = []
        for a in range(len(class_keys)):
            canon_a, sign_a = self.canonical_verb(self.verbs[a])
            if sign_a < 0:
                continue
            for b in range(len(class_keys)):
                canon_b, sign_b = self.canonical_verb(self.verbs[b])
                if sign_b < 0 and canon_b == canon_a and self.objects[b] == self.objects[a] and \
                        self.verbs[a] != self.verbs[b]:
                    pairs.append((class_keys[a], class_keys[b]))
        return pairs


def _read_table(path: Path, fields: int) -> list[list[str]]:
    if not path.is_file():
        raise MeidBenchError(f"{path}: not found; simulator v2 reads the Charades class mapping from the annotation "
                             f"folder ({MAPPING_FILE}, {VERB_FILE}, {OBJECT_FILE}); pass the folder holding them")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=fields - 1) if fields == 2 else line.split()
        if len(parts) != fields:
            raise MeidBenchError(f"{path}: line {number}: expected {fields} whitespace-separated fields, got "
                                 f"{len(parts)}; the file is not in the Charades format")
        rows.append(parts)
    return rows


def read_class_structure(folder: str | Path, class_keys: list[str]) -> ClassStructure:
    """Read the mapping, verb and object files of a Charades annotation folder for the classes ``class_keys``."""
    folder = Path(folder)
    mapping = {row[0]: (row[1], row[2]) for row in _read_table(folder / MAPPING_FILE, 3)}
    verb_names = {row[0]: row[1].strip() for row in _read_table(folder / VERB_FILE, 2)}
    object_ids = {row[0] for row in _read_table(folder / OBJECT_FILE, 2)}
    missing = [key for key in class_keys if key not in mapping]
    if missing:
        raise MeidBenchError(f"{folder / MAPPING_FILE}: has no entry for classes {', '.join(missing[:5])} of the "
                             "split; pass the annotation folder of the split's dataset")
    for key in class_keys:
        obj, verb = mapping[key]
        if verb not in verb_names:
            raise MeidBenchError(f"{folder / MAPPING_FILE}: class {key}: verb {verb} is not in {VERB_FILE}")
        if obj not in object_ids:
            raise MeidBenchError(f"{folder / MAPPING_FILE}: class {key}: object {obj} is not in {OBJECT_FILE}")
    checksums = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                 for name in (MAPPING_FILE, VERB_FILE, OBJECT_FILE)}
    return ClassStructure([mapping[k][0] for k in class_keys], [mapping[k][1] for k in class_keys], verb_names,
                          checksums)


@dataclass
class ClassModel:
    """What v2 draws per class: static prototypes, signature directions and signs, per-class variation scale."""

    prototypes: np.ndarray  # [C, dim]
    directions: np.ndarray | None  # [C, dim] unit direction of each class's signature (None: no signatures)
    signs: np.ndarray  # [C] +1 forwards, -1 backwards
    variation: np.ndarray  # [C] per-video variation norm of each class
    mirrored_pairs: list[tuple[str, str]]


def build_class_model(config: Any, class_keys: list[str], structure: ClassStructure | None, rng_for) -> ClassModel:
    """Prototypes of norm ``prototype_scale``; ``class_overlap`` of a prototype's energy shared (half object, half
    verb with the mapping; v1's common factors without it). From ``config.version`` 3 on, the two classes of a
    mirrored pair share their difficulty (drawn from the pair's key: the forwards class's)."""
    dim, count = config.dim, len(class_keys)
    pairs = structure.mirrored_pairs(class_keys) if structure is not None else []
    difficulty_key = {key: key for key in class_keys}
    if getattr(config, "version", 2) >= 3:
        difficulty_key.update({backwards: forwards for forwards, backwards in pairs})
    z = np.array([rng_for(22, f"difficulty:{difficulty_key[key]}").standard_normal() for key in class_keys])
    variation = config.instance_scale * np.exp(config.difficulty_spread * z)
    if structure is None:
        return ClassModel(class_prototypes(config, count), None, np.ones(count), variation, [])
    canon = [structure.canonical_verb(verb) for verb in structure.verbs]
    mirrored = {key for pair in pairs for key in pair}
    prototypes = np.empty((count, dim))
    directions = np.empty((count, dim))
    for index, key in enumerate(class_keys):
        obj, (verb, sign) = structure.objects[index], canon[index]
        # Mirrored classes share the whole static prototype (object, verb pair and their own part).
        own_key = f"own:{obj}:{verb}" if key in mirrored else f"own:{key}"
        parts = (_unit(rng_for(20, f"object:{obj}"), 1, dim)[0], _unit(rng_for(21, f"verb:{verb}"), 1, dim)[0],
                 _unit(rng_for(23, own_key), 1, dim)[0])
        share = config.class_overlap
        mixed = math.sqrt(share / 2) * parts[0] + math.sqrt(share / 2) * parts[1] + math.sqrt(1 - share) * parts[2]
        prototypes[index] = config.prototype_scale * mixed / np.linalg.norm(mixed)
        directions[index] = _unit(rng_for(24, f"signature:{verb}"), 1, dim)[0]
    signs = np.array([sign for _, sign in canon])
    return ClassModel(prototypes, directions, signs, variation, pairs)


def segment_positions(video: Any, times: np.ndarray, num_classes: int) -> np.ndarray:
    """float [frames, classes]: each active frame's relative position in its class's segment (0 at the start, 1 at
    the end), NaN where the class is inactive; classes of videos without segments span the whole video."""
    positions = np.full((len(times), num_classes), np.nan)
    if len(video["segment_classes"]):
        for cls, start, end in zip(video["segment_classes"], video["segment_starts"], video["segment_ends"]):
            lo = int(np.searchsorted(times, start, side="left"))
            hi = int(np.searchsorted(times, end, side="left"))
            if hi > lo:
                positions[lo:hi, int(cls)] = (times[lo:hi] - start) / max(end - start, 1e-9)
    elif len(video["labels"]):
        span = times[-1] - times[0] if len(times) > 1 else 1.0
        whole = (times - times[0]) / max(span, 1e-9)
        positions[:, np.asarray(video["labels"], dtype=np.int64)] = whole[:, None]
    return np.clip(positions, 0.0, 1.0)


def ar1_noise(rng: np.random.Generator, frames: int, dim: int, scale: float, correlation: float) -> np.ndarray:
    """Stationary AR(1) noise [frames, dim]: per-dimension std scale / sqrt(dim), lag-one correlation ``correlation``."""
    from scipy.signal import lfilter  # only v2 needs it

    innovations = rng.standard_normal((frames, dim))
    gain = math.sqrt(1.0 - correlation**2)
    innovations[0] /= gain  # the first frame starts at the stationary variance
    return lfilter([gain], [1.0, -correlation], innovations, axis=0) * (scale / math.sqrt(dim))


def synthesize_video_v2(config: Any, video: Any, model: ClassModel, background: np.ndarray,
                        context: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One video's frames float32 [T, dim] and activity bool [T, C] under v2."""
    duration = float(video["duration"])
    if not (math.isfinite(duration) and duration > 0):
        duration = config.default_duration
    frames = num_frames_for(duration, config.fps)
    times = frame_times(frames, config.fps)
    positions = segment_positions(video, times, len(model.prototypes))
    active = ~np.isnan(positions)
    columns = np.flatnonzero(active.any(axis=0))
    action = np.zeros((frames, config.dim))
    if len(columns):
        looks = model.prototypes[columns] + model.variation[columns, None] * _unit(rng, len(columns), config.dim)
        action = active[:, columns].astype(np.float64) @ looks
        if model.directions is not None and config.temporal_scale > 0:
            # Position 0 -> -1, 1 -> +1 along the verb's direction; backwards verbs run it the other way.
            course = np.nan_to_num(2.0 * positions[:, columns] - 1.0) * model.signs[columns]
            action += config.temporal_scale * course @ model.directions[columns]
    # The same norm for every frame: the expected norm of one class's look.
    norm = config.prototype_scale * math.sqrt(1.0 + config.instance_scale**2)
    busy = active.any(axis=1)
    lengths = np.linalg.norm(action[busy], axis=1, keepdims=True)
    action[busy] = norm * action[busy] / np.maximum(lengths, 1e-12)
    action[~busy] = norm * background
    correlation = math.exp(-1.0 / (config.fps * config.noise_time_constant)) if config.noise_time_constant > 0 else 0.0
    noise = ar1_noise(rng, frames, config.dim, config.noise, correlation)
    return (action + context + noise).astype(np.float32), active
