"""Batch-level augmentation for long-tailed training: mixup and FrameStack.

The loop applies a strategy to each instance batch before the forward pass and, for FrameStack, feeds it the
per-class AP after each validation::

    strategy = create_batch_mix(recipe.batch_mix, stats, seed)          # None for batch_mix: none
    features, targets, mask = strategy(features, targets, mask)
    ...
    strategy.update_class_ap(per_class_ap)                             # after each validation
    checkpoint["batch_mix"] = strategy.state_dict()                     # RNG state and running AP, for --resume

Each strategy owns a seeded numpy generator, so a run is reproducible and resumable independently of torch's RNG
(give each distributed rank its own seed). Mixing two label masks keeps a label's loss only where both masks do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from meid_bench.registry import Registry, SplitStats


def to_device_async(values: np.ndarray, device: torch.device) -> Tensor:
    """A host array as a tensor on ``device`` without waiting for the device: on CUDA through pinned memory and a
    non-blocking copy (a copy from ordinary memory waits for the work queued before it, once per step); the
    caching host allocator keeps the pinned block until the copy has run."""
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class MixedBatch(NamedTuple):
    features: Tensor
    targets: Tensor
    mask: Tensor | None


@dataclass(frozen=True)
class NoMixOptions:
    """No batch mixing."""


@dataclass(frozen=True)
class MixupOptions:
    """alpha: lambda ~ Beta(alpha, alpha), one lambda per batch (the VideoLT reference draws Beta(1, 1))."""

    alpha: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        return [("alpha", f"must be > 0, got {self.alpha}")] if self.alpha <= 0 else []


@dataclass(frozen=True)
class FrameStackOptions:
    """mix_fraction: share of each batch that is mixed (reference 0.5, the first half of the shuffled batch).
    video_ap: how a video's AP is read from the class APs: ``all_classes`` (the reference: mean over all C classes
    of y * AP, which on multi-label data mostly counts a video's labels) or ``positives`` (mean AP of the video's
    own positive classes: how well its labels are recognised)."""

    mix_fraction: float = 0.5
    video_ap: Literal["all_classes", "positives"] = "all_classes"

    def problems(self) -> list[tuple[str, str]]:
        if not 0.0 < self.mix_fraction <= 1.0:
            return [("mix_fraction", f"must be in (0, 1], got {self.mix_fraction}")]
        return []


class BatchMix:
    """Base: a seeded strategy ``(features [B,T,D], targets [B,C], mask [B,C] | None) -> MixedBatch``."""

    uses_class_ap: bool = False  # whether the loop must measure per-class AP for :meth:`update_class_ap`

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def __call__(self, features: Tensor, targets: Tensor, mask: Tensor | None = None) -> MixedBatch:  # pragma: no cover
        raise NotImplementedError

    def update_class_ap(self, class_ap: np.ndarray) -> None:
        """Per-class AP measured by the loop each epoch; only strategies with ``uses_class_ap`` use it."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._rng.bit_generator.state = dict(state["rng"])


class Mixup(BatchMix):
    """Zhang et al. 2018: x = l x + (1 - l) x[perm], y likewise, one l ~ Beta(alpha, alpha) per batch."""

    def __init__(self, alpha: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        self.alpha = alpha

    def __call__(self, features: Tensor, targets: Tensor, mask: Tensor | None = None) -> MixedBatch:
        share = float(self._rng.beta(self.alpha, self.alpha))
        perm = to_device_async(self._rng.permutation(features.shape[0]), features.device)
        mixed_features = share * features + (1.0 - share) * features[perm]
        mixed_targets = share * targets + (1.0 - share) * targets[perm]
        mixed_mask = mask * mask[perm] if mask is not None else None
        return MixedBatch(mixed_features, mixed_targets, mixed_mask)


class FrameStack(BatchMix):
    """FrameStack (VideoLT, Zhang et al. 2021): frame-level mixing of two videos driven by the running class AP.

    The first ``mix_fraction`` of the batch is paired by a random permutation among itself. For video i and
    partner j, with video AP a_v = mean over classes of y_v * AP (``all_classes``, the reference's form) or
    sum(y_v * AP) / sum(y_v) (``positives``, for multi-label data), the partner's share is
    beta = a_i / (a_i + a_j) (0.5 when both are ~0): the better-recognised video gives up frames.
    ``int(beta * T)`` partner frames (uniformly spaced over its T frames) come first, then ``T - int(beta * T)``
    of video i's (uniformly spaced); targets are ``(1 - beta) y_i + beta y_j``. The rest of the batch is unchanged.
    """

    uses_class_ap = True

    def __init__(self, num_classes: int, mix_fraction: float = 0.5, seed: int = 0,
                 video_ap: str = "all_classes") -> None:
        super().__init__(seed)
        self.num_classes = num_classes
        self.mix_fraction = mix_fraction
        self.video_ap = video_ap
        self.class_ap = np.zeros(num_classes, dtype=np.float64)
        self._class_ap_on: tuple[torch.device, Tensor] | None = None  # class_ap on the batches' device

    def update_class_ap(self, class_ap: np.ndarray) -> None:
        """Replace the running AP; classes whose AP is NaN (no positives in validation) keep their previous value."""
        values = np.asarray(class_ap, dtype=np.float64)
        if values.shape != (self.num_classes,):
            raise ValueError(f"class_ap must have shape ({self.num_classes},), got {values.shape}")
        self.class_ap = np.where(np.isnan(values), self.class_ap, values)
        self._class_ap_on = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_ap": self.class_ap.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.class_ap = np.asarray(state["class_ap"], dtype=np.float64)
        self._class_ap_on = None

    def partner_shares(self, targets: Tensor, perm: np.ndarray) -> np.ndarray:
        """beta per mixed video: the share of frames (and label weight) taken from its partner."""
        labels = targets.detach().double().cpu().numpy()
        if self.video_ap == "positives":
            video_ap = (labels * self.class_ap).sum(axis=-1) / np.maximum(labels.sum(axis=-1), 1e-12)
        else:
            video_ap = (labels * self.class_ap).mean(axis=-1)
        partner_ap = video_ap[perm]
        total = video_ap + partner_ap
        safe_total = np.where(total < 1e-5, 1.0, total)
        return np.where(total < 1e-5, 0.5, video_ap / safe_total)

    def partner_shares_on_device(self, targets: Tensor, perm: Tensor) -> Tensor:
        """:meth:`partner_shares` computed where the targets are (float64 [mixed]), without reading them back."""
        device = targets.device
        if self._class_ap_on is None or self._class_ap_on[0] != device:
            self._class_ap_on = (device, to_device_async(self.class_ap, device))
        class_ap = self._class_ap_on[1]
        labels = targets.detach().double()
        if self.video_ap == "positives":
            video_ap = (labels * class_ap).sum(dim=-1) / labels.sum(dim=-1).clamp_min(1e-12)
        else:
            video_ap = (labels * class_ap).mean(dim=-1)
        total = video_ap + video_ap[perm]
        safe_total = torch.where(total < 1e-5, torch.ones_like(total), total)
        return torch.where(total < 1e-5, torch.full_like(total, 0.5), video_ap / safe_total)

    def __call__(self, features: Tensor, targets: Tensor, mask: Tensor | None = None) -> MixedBatch:
        batch, num_frames = features.shape[0], features.shape[1]
        mixed = int(batch * self.mix_fraction)
        if mixed == 0:
            return MixedBatch(features, targets, mask)
        perm = self._rng.permutation(mixed)
        device = features.device
        if device.type == "cpu":  # the host computes; the published CPU results came from this path
            beta_host = self.partner_shares(targets[:mixed], perm)
            source_video, source_frame = stack_sources(beta_host, perm, num_frames)
            source_video, source_frame = torch.from_numpy(source_video), torch.from_numpy(source_frame)
            beta = torch.from_numpy(beta_host)
            perm_t = torch.from_numpy(perm)
        else:  # an accelerator computes the same without reading the targets back (no wait per step)
            perm_t = to_device_async(perm, device)
            beta = self.partner_shares_on_device(targets[:mixed], perm_t)
            source_video, source_frame = stack_sources_on_device(beta, perm_t, num_frames)
        stacked = features[source_video, source_frame]
        share = beta.to(targets.dtype).unsqueeze(-1)
        mixed_targets = (1.0 - share) * targets[:mixed] + share * targets[:mixed][perm_t]
        out_features = torch.cat([stacked, features[mixed:]], dim=0)
        out_targets = torch.cat([mixed_targets, targets[mixed:]], dim=0)
        out_mask = None
        if mask is not None:
            out_mask = torch.cat([mask[:mixed] * mask[:mixed][perm_t], mask[mixed:]], dim=0)
        return MixedBatch(out_features, out_targets, out_mask)


def stack_sources(beta: np.ndarray, perm: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """FrameStack's (video, frame) sources [mixed, T]: ``int(beta * T)`` uniformly spaced frames of the partner
    ``perm[v]`` first, then ``T - int(beta * T)`` uniformly spaced frames of video v."""
    mixed = len(beta)
    source_video = np.empty((mixed, num_frames), dtype=np.int64)
    source_frame = np.empty((mixed, num_frames), dtype=np.int64)
    for video in range(mixed):
        from_partner = int(beta[video] * num_frames)
        from_self = num_frames - from_partner
        source_video[video, :from_partner] = perm[video]
        source_video[video, from_partner:] = video
        source_frame[video, :from_partner] = np.linspace(0, num_frames - 1, from_partner).round()
        source_frame[video, from_partner:] = np.linspace(0, num_frames - 1, from_self).round()
    return source_video, source_frame


def stack_sources_on_device(beta: Tensor, perm: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """:func:`stack_sources` as tensor operations on the device of ``beta`` (float64) and ``perm``: the same
    indices (numpy's ``linspace(0, T - 1, n)[k]`` is ``k * ((T - 1) / (n - 1))`` in float64, its last value set to
    T - 1, which the rounding reaches anyway)."""
    device = beta.device
    from_partner = (beta * num_frames).long().unsqueeze(1)  # int(): beta >= 0, so truncation is floor
    from_self = num_frames - from_partner
    k = torch.arange(num_frames, device=device).unsqueeze(0)
    from_the_partner = k < from_partner
    position = torch.where(from_the_partner, k, k - from_partner).double()
    count = torch.where(from_the_partner, from_partner, from_self)
    divisor = (count - 1).clamp_min(1).double()
    # A tensor divided by a tensor: `scalar / tensor` multiplies by the reciprocal, one rounding more than numpy.
    step = torch.full_like(divisor, float(num_frames - 1)) / divisor
    frame = torch.where(count > 1, position * step, torch.zeros_like(position)).round().long()
    video = torch.where(from_the_partner, perm.unsqueeze(1), torch.arange(len(beta), device=device).unsqueeze(1))
    return video, frame



# -- the registry ----------------------------------------------------------------------------------------------------
# A strategy's factory gets its options, the split's statistics and the stream's ``seed``; ``none`` builds None.

BATCH_MIXES: Registry[BatchMix | None] = Registry("batch_mix")


@BATCH_MIXES.register("none", NoMixOptions)
def no_batch_mix(options: NoMixOptions, stats: SplitStats, *, seed: int = 0) -> None:
    return None


@BATCH_MIXES.register("mixup", MixupOptions)
def mixup(options: MixupOptions, stats: SplitStats, *, seed: int = 0) -> Mixup:
    return Mixup(options.alpha, seed=seed)


@BATCH_MIXES.register("framestack", FrameStackOptions)
def framestack(options: FrameStackOptions, stats: SplitStats, *, seed: int = 0) -> FrameStack:
    return FrameStack(stats.num_classes, options.mix_fraction, seed=seed, video_ap=options.video_ap)


def list_batch_mixes() -> list[str]:
    return BATCH_MIXES.names()


def batch_mix_options_class(name: str, where: str = "create_batch_mix") -> type:
    return BATCH_MIXES.options_class(name, where)


def create_batch_mix(config: Any, stats: SplitStats, seed: int = 0) -> BatchMix | None:
    """The strategy named ``config.name`` with ``config.options`` (dataclass or mapping); None for ``none``."""
    return BATCH_MIXES.create(config.name, config.options, stats, where=f"create_batch_mix({config.name!r})", seed=seed)
