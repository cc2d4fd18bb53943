"""The recommended feature specifications (docs/protocol.md, section 8) and which one a feature store follows.

A specification fixes everything a store's features depend on: backbone, weight file, frames per second (hence the
frame count, ``round(duration * fps)``), preprocessing and, for clip backbones, clip length and rate. Plain data and
string checks, no torch: ``meid-bench verify`` calls :func:`describe_spec`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from meid_bench.extract.catalog import BACKBONES

SPEC_VERSION = "v1"
# Frames per second per benchmark: Charades and Charades-Ego videos last about 30 s (120 frames at 4 fps); VideoLT
# splits carry no durations and its reference sampling draws 60 (train) or 150 (test) frames a video.
SPEC_FPS = {"charadeslt": 4.0, "charadesegolt": 4.0, "videolt": 1.0}


@dataclass(frozen=True)
class FeatureSpec:
    """One recommended specification, applied at the benchmark's fps (``SPEC_FPS``)."""

    name: str
    backbone: str
    weights: str

    @property
    def full_name(self) -> str:
        return f"{SPEC_VERSION}-{self.name}"

    def expected(self) -> dict[str, Any]:
        info = BACKBONES[self.backbone]
        weights = info.weight_set(self.weights)
        assert weights is not None
        return {"backbone": self.backbone, "weights": weights.name, "weights_sha256_prefix": weights.sha256_prefix,
                "dim": info.dim, "preprocessing": weights.preprocessing.describe(), "clip_len": info.clip_len,
                "clip_fps": info.clip_fps}


# "frame" is the primary one (the same 2048-d ResNet-101 features on all three benchmarks); "clip" adds motion.
FEATURE_SPECS = {spec.name: spec for spec in (FeatureSpec("frame", "resnet101", "IMAGENET1K_V2"),
                                              FeatureSpec("clip", "r2plus1d_18", "KINETICS400_V1"))}


def recommended_fps(benchmark: str) -> float | None:
    return SPEC_FPS.get(benchmark)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def spec_of(attrs: Mapping[str, Any]) -> tuple[str | None, str]:
    """(specification name or None, one-line reason) for a feature store's root attributes."""
    if bool(attrs.get("simulated", False)):
        return None, "simulated features"
    backbone = str(attrs.get("backbone", "") or "")
    if not backbone:
        return None, f"origin not recorded ({attrs.get('generator', '') or 'unknown generator'})"
    candidates = [s for s in FEATURE_SPECS.values() if s.backbone == backbone]
    if not candidates:
        return None, f"backbone {backbone} is in no specification"
    spec = candidates[0]
    want = spec.expected()
    benchmark = str(attrs.get("benchmark", ""))
    fps = SPEC_FPS.get(benchmark)
    sha = str(attrs.get("weights_sha256", "") or "")
    sampling = _json(attrs.get("sampling", "{}")) or {}
    got_fps = float(attrs.get("fps", float("nan")))
    problems = []
    if not sha.startswith(want["weights_sha256_prefix"]) or not sha:
        problems.append(f"weights {attrs.get('weights', '?')} are not {spec.weights} "
                        f"(sha256 {want['weights_sha256_prefix']}...)")
    if fps is None:
        problems.append(f"benchmark {benchmark or '?'} has no specification")
    elif not (math.isfinite(got_fps) and abs(got_fps - fps) < 1e-9):
        problems.append(f"fps {got_fps:g} where the specification has {fps:g}")
    if _json(attrs.get("preprocessing", "")) != want["preprocessing"]:
        problems.append("preprocessing differs from the weights' own")
    if int(attrs.get("dim", 0)) != want["dim"]:
        problems.append(f"dimension {attrs.get('dim')} where the specification has {want['dim']}")
    if want["clip_len"] and (sampling.get("clip_len") != want["clip_len"]
                             or sampling.get("clip_fps") != want["clip_fps"]):
        problems.append(f"clips of {sampling.get('clip_len')} frames at {sampling.get('clip_fps')} fps where the "
                        f"specification has {want['clip_len']} at {want['clip_fps']:g}")
    if problems:
        return None, f"closest is {spec.full_name}, but " + "; ".join(problems)
    return spec.full_name, f"{backbone} {spec.weights}, {fps:g} fps, for {benchmark}"


def describe_spec(attrs: Mapping[str, Any]) -> str:
    """One line for ``verify`` and ``features info``: which feature specification a store follows, or why none."""
    name, reason = spec_of(attrs)
    if name is None:
        return f"feature specification: none ({reason})"
    return f"feature specification: {name} ({reason})"
