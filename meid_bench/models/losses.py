"""Multi-label losses for long-tailed training: BCE, focal, class-balanced, LDAM with deferred re-weighting, EQL.

Every criterion is called ``criterion(logits [B, C], targets [B, C], mask [B, C] | None) -> scalar`` and reduces the
same way the reference BCE does: the mean over all B x C elements of ``loss * class_weight * mask`` (a masked
element counts in the denominator, as with BCE's ``weight=``), so losses and masks never change the loss scale by
the number of positives. Targets may be soft (mixup, FrameStack). Logits are cast to float32 first (mixed
precision). ``criterion.set_epoch(epoch)`` (0-based) is called by the loop before each epoch; only LDAM-DRW uses it.
Class counts are passed in at construction (registered buffers); nothing is read from files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meid_bench.errors import MeidBenchError
from meid_bench.models.options import parse_options


class MultiLabelLoss(nn.Module):
    """Base: subclasses give ``elementwise(logits, targets) -> [B, C]``; this applies class weights, mask, mean."""

    def __init__(self, class_weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("class_weight", class_weight)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called with the 0-based epoch index before each epoch (a no-op unless the loss depends on it)."""

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        logits = logits.float()
        targets = targets.to(logits.dtype)
        if targets.shape != logits.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
        loss = self.elementwise(logits, targets)
        if self.class_weight is not None:
            loss = loss * self.class_weight
        if mask is not None:
            loss = loss * mask.to(loss.dtype)
        return loss.mean()


def class_balanced_weights(class_counts: np.ndarray, beta: float) -> np.ndarray:
    """Cui et al. 2019: w_c = (1 - beta) / (1 - beta^n_c), normalised to sum to C. Counts below 1 count as 1."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    if beta == 0.0:
        weights = np.ones_like(counts)
    else:
        weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * len(counts)


def _float_tensor(values: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


# -- option dataclasses (what a recipe's `loss:` section may hold besides `name`) ------------------------------------


@dataclass(frozen=True)
class BCEOptions:
    """Plain binary cross-entropy with logits: no options."""


@dataclass(frozen=True)
class FocalOptions:
    """gamma: focusing exponent (Lin et al. 2017: 2; FrameStack's reference: 1). alpha: constant scale."""

    gamma: float = 2.0
    alpha: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        return [("gamma", f"must be >= 0, got {self.gamma}")] if self.gamma < 0 else []


@dataclass(frozen=True)
class ClassBalancedOptions:
    """beta: effective-number parameter (reference 0.9999); base: the per-element loss weighted; gamma for focal."""

    beta: float = 0.9999
    base: Literal["bce", "focal"] = "bce"
    gamma: float = 2.0

    def problems(self) -> list[tuple[str, str]]:
        return [("beta", f"must be in [0, 1), got {self.beta}")] if not 0.0 <= self.beta < 1.0 else []


@dataclass(frozen=True)
class LDAMOptions:
    """max_margin 0.5 and scale 30 (Cao et al. 2019); drw_epoch: first 0-based epoch with class-balanced weights
    (reference 50 of 100) computed with drw_beta (0.9999)."""

    max_margin: float = 0.5
    scale: float = 30.0
    drw_epoch: int = 50
    drw_beta: float = 0.9999

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.max_margin < 0:
            found.append(("max_margin", f"must be >= 0, got {self.max_margin}"))
        if self.scale <= 0:
            found.append(("scale", f"must be > 0, got {self.scale}"))
        if self.drw_epoch < 0:
            found.append(("drw_epoch", f"must be >= 0, got {self.drw_epoch}"))
        if not 0.0 <= self.drw_beta < 1.0:
            found.append(("drw_beta", f"must be in [0, 1), got {self.drw_beta}"))
        return found


@dataclass(frozen=True)
class EQLOptions:
    """tail_threshold: classes with at most this many training videos are tail (reference 100).
    drop_prob: probability that a tail class's negative loss is dropped for one element (the reference's
    ``gamma`` = 1.76e-3, the lambda of the EQL setting)."""

    tail_threshold: int = 100
    drop_prob: float = 1.76e-3

    def problems(self) -> list[tuple[str, str]]:
        return [("drop_prob", f"must be in [0, 1], got {self.drop_prob}")] if not 0.0 <= self.drop_prob <= 1.0 else []


# -- the losses ------------------------------------------------------------------------------------------------------


class BCELoss(MultiLabelLoss):
    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


class FocalLoss(MultiLabelLoss):
    """alpha * (1 - p_t)^gamma * BCE with p_t = exp(-BCE) (the reference form; it also covers soft targets)."""

    def __init__(self, gamma: float = 2.0, alpha: float = 1.0, class_weight: Tensor | None = None) -> None:
        super().__init__(class_weight)
        self.gamma = gamma
        self.alpha = alpha

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.gamma == 0.0:
            return self.alpha * bce
        return self.alpha * (1.0 - torch.exp(-bce)).pow(self.gamma) * bce


class LDAMDRWLoss(MultiLabelLoss):
    """LDAM for sigmoid outputs: BCE(scale * (z - y * m_c), y), m_c = max_margin * n_c^(-1/4) / max_c n_c^(-1/4);
    per-class weights 1 before ``drw_epoch`` and class-balanced (``drw_beta``) from it on (deferred re-weighting).

    The margin is per class (each positive logit minus its own class's margin); the VideoLT reference subtracts the
    sum of all of a video's positive classes' margins from each positive logit, a carry-over from single-label code.
    """

    def __init__(self, class_counts: np.ndarray, options: LDAMOptions) -> None:
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
        super().__init__(torch.ones(len(counts)))
        margins = counts**-0.25
        margins = margins * (options.max_margin / margins.max())
        self.register_buffer("margins", _float_tensor(margins))
        self.register_buffer("drw_weight", _float_tensor(class_balanced_weights(counts, options.drw_beta)))
        self.scale = options.scale
        self.drw_epoch = options.drw_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if epoch >= self.drw_epoch:
            self.class_weight.copy_(self.drw_weight)
        else:
            self.class_weight.fill_(1.0)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        shifted = logits - targets * self.margins
        return F.binary_cross_entropy_with_logits(self.scale * shifted, targets, reduction="none")


class EqualizationLoss(MultiLabelLoss):
    """EQL (Tan et al. 2020) as the VideoLT reference applies it: BCE weighted by 1 - beta * tail_c * (1 - y), beta a
    Bernoulli(drop_prob) draw per element, tail_c = 1 for classes with at most ``tail_threshold`` training videos:
    tail classes are sometimes spared the discouraging gradient of other classes' positives."""

    def __init__(self, class_counts: np.ndarray, options: EQLOptions) -> None:
        super().__init__()
        counts = np.asarray(class_counts, dtype=np.float64)
        self.register_buffer("tail", _float_tensor(counts <= options.tail_threshold))
        self.drop_prob = options.drop_prob

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        # torch.rand (global generator) keeps runs reproducible under the loop's seed.
        drop = (torch.rand(logits.shape, device=logits.device) < self.drop_prob).to(logits.dtype)
        return bce * (1.0 - drop * self.tail * (1.0 - targets))


# -- the factory -----------------------------------------------------------------------------------------------------

LOSS_OPTIONS: dict[str, type] = {
    "bce": BCEOptions,
    "focal": FocalOptions,
    "cb": ClassBalancedOptions,
    "ldam_drw": LDAMOptions,
    "eql": EQLOptions,
}


def list_losses() -> list[str]:
    return sorted(LOSS_OPTIONS)


def loss_options_class(name: str, where: str = "create_criterion") -> type:
    if name not in LOSS_OPTIONS:
        raise MeidBenchError(f"{where}: unknown loss {name!r}; known losses: {', '.join(list_losses())}")
    return LOSS_OPTIONS[name]


class NamedOptions(Protocol):
    """What :func:`create_criterion` reads from a recipe's LossConfig."""

    name: str
    options: Any


def create_criterion(loss_config: NamedOptions, class_counts: np.ndarray) -> MultiLabelLoss:
    """Build the loss named ``loss_config.name`` with ``loss_config.options`` (its options dataclass or a mapping).

    class_counts: int [C], training videos per class (``split.classes["train_count"]``), for cb, ldam_drw and eql.
    """
    name = loss_config.name
    options_class = loss_options_class(name)
    options = loss_config.options
    if isinstance(options, Mapping):
        options = parse_options(options_class, options, f"create_criterion({name!r})")
    elif not isinstance(options, options_class):
        raise TypeError(f"loss {name!r} expects {options_class.__name__}, got {type(options).__name__}")
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or len(counts) == 0:
        raise ValueError(f"class_counts must be a non-empty 1-d array, got shape {counts.shape}")
    if name == "bce":
        return BCELoss()
    if name == "focal":
        return FocalLoss(options.gamma, options.alpha)
    if name == "cb":
        weight = _float_tensor(class_balanced_weights(counts, options.beta))
        if options.base == "focal":
            return FocalLoss(options.gamma, 1.0, class_weight=weight)
        return BCELoss(class_weight=weight)
    if name == "ldam_drw":
        return LDAMDRWLoss(counts, options)
    return EqualizationLoss(counts, options)

