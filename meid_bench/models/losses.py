"""Multi-label losses for long-tailed training: BCE, focal, class-balanced, LDAM with deferred re-weighting, EQL
(Tan et al. 2020's form, and the VideoLT reference's random-drop variant).

Every criterion is called ``criterion(logits [B, C], targets [B, C], mask [B, C] | None) -> scalar`` and reduces the
same way the reference BCE does: the mean over all B x C elements of ``loss * class_weight * mask`` (a masked
element counts in the denominator, as with BCE's ``weight=``), so losses and masks never change the loss scale by
the number of positives. Targets may be soft (mixup, FrameStack). Logits are cast to float32 first (mixed
precision). ``criterion.set_epoch(epoch)`` (0-based) is called by the loop before each epoch; only LDAM-DRW uses it.
Class counts (and, for EQL, the number of training videos) are passed in at construction (registered buffers);
nothing is read from files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meid_bench.registry import Registry, SplitStats


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


# Every loss registers here with its options dataclass; its factory (the class's ``from_options``) receives those
# options and the split's statistics.
LOSSES: Registry[MultiLabelLoss] = Registry("loss")


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
    computed with drw_beta (0.9999); null: the first lr decay (Cao et al. defer re-weighting to the annealed phase;
    the VideoLT reference: epoch 50, after its decay at 30). A recipe resolves null against its schedule
    (``Recipe.for_benchmark``)."""

    max_margin: float = 0.5
    scale: float = 30.0
    drw_epoch: int | None = None
    drw_beta: float = 0.9999

    def resolved_for(self, recipe: Any) -> "LDAMOptions":
        """``drw_epoch: null`` made the first lr decay of the recipe's schedule (called by ``Recipe.resolved``)."""
        if self.drw_epoch is not None:
            return self
        milestones = tuple(recipe.optim.milestones)
        if not milestones:
            raise ValueError("drw_epoch: null means the first lr decay, but optim.milestones is empty; give "
                             "drw_epoch an epoch")
        return replace(self, drw_epoch=milestones[0])

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.max_margin < 0:
            found.append(("max_margin", f"must be >= 0, got {self.max_margin}"))
        if self.scale <= 0:
            found.append(("scale", f"must be > 0, got {self.scale}"))
        if self.drw_epoch is not None and self.drw_epoch < 0:
            found.append(("drw_epoch", f"must be >= 0 or null, got {self.drw_epoch}"))
        if not 0.0 <= self.drw_beta < 1.0:
            found.append(("drw_beta", f"must be in [0, 1), got {self.drw_beta}"))
        return found


@dataclass(frozen=True)
class EQLOptions:
    """frequency_threshold: lambda of Tan et al. 2020, the class frequency (training videos with the class / all
    training videos) below which a class's negative loss is switched off (1.76e-3, their LVIS value)."""

    frequency_threshold: float = 1.76e-3

    def problems(self) -> list[tuple[str, str]]:
        if not 0.0 <= self.frequency_threshold <= 1.0:
            return [("frequency_threshold", f"must be in [0, 1], got {self.frequency_threshold}")]
        return []


@dataclass(frozen=True)
class EQLVideoLTOptions:
    """The VideoLT reference's variant. tail_threshold: classes with at most this many training videos are tail
    (100). drop_prob: probability that a tail class's negative loss is dropped for one element (the reference's
    ``gamma`` = 1.76e-3: Tan et al.'s threshold lambda reused as a probability)."""

    tail_threshold: int = 100
    drop_prob: float = 1.76e-3

    def problems(self) -> list[tuple[str, str]]:
        return [("drop_prob", f"must be in [0, 1], got {self.drop_prob}")] if not 0.0 <= self.drop_prob <= 1.0 else []


# -- the losses ------------------------------------------------------------------------------------------------------


@LOSSES.register("bce", BCEOptions)
class BCELoss(MultiLabelLoss):
    @classmethod
    def from_options(cls, options: BCEOptions, stats: SplitStats) -> "BCELoss":
        return cls()

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


@LOSSES.register("focal", FocalOptions)
class FocalLoss(MultiLabelLoss):
    """alpha * (1 - p_t)^gamma * BCE with p_t = exp(-BCE) (the reference form; it also covers soft targets)."""

    def __init__(self, gamma: float = 2.0, alpha: float = 1.0, class_weight: Tensor | None = None) -> None:
        super().__init__(class_weight)
        self.gamma = gamma
        self.alpha = alpha

    @classmethod
    def from_options(cls, options: FocalOptions, stats: SplitStats) -> "FocalLoss":
        return cls(options.gamma, options.alpha)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.gamma == 0.0:
            return self.alpha * bce
        return self.alpha * (1.0 - torch.exp(-bce)).pow(self.gamma) * bce


@LOSSES.register("ldam_drw", LDAMOptions)
class LDAMDRWLoss(MultiLabelLoss):
    """LDAM for sigmoid outputs: BCE(scale * (z - y * m_c), y), m_c = max_margin * n_c^(-1/4) / max_c n_c^(-1/4);
    per-class weights 1 before ``drw_epoch`` and class-balanced (``drw_beta``) from it on (deferred re-weighting).

    The margin is per class (each positive logit minus its own class's margin); the VideoLT reference subtracts the
    sum of all of a video's positive classes' margins from each positive logit, a carry-over from single-label code.
    """

    def __init__(self, class_counts: np.ndarray, options: LDAMOptions) -> None:
        if options.drw_epoch is None:
            raise ValueError("ldam_drw: drw_epoch is null (the first lr decay); resolve the recipe for its schedule "
                             "first (Recipe.for_benchmark) or give an epoch")
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
        super().__init__(torch.ones(len(counts)))
        margins = counts**-0.25
        margins = margins * (options.max_margin / margins.max())
        self.register_buffer("margins", _float_tensor(margins))
        self.register_buffer("drw_weight", _float_tensor(class_balanced_weights(counts, options.drw_beta)))
        self.scale = options.scale
        self.drw_epoch = options.drw_epoch
        self.epoch = 0

    @classmethod
    def from_options(cls, options: LDAMOptions, stats: SplitStats) -> "LDAMDRWLoss":
        return cls(stats.require("class_counts", "loss ldam_drw"), options)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if epoch >= self.drw_epoch:
            self.class_weight.copy_(self.drw_weight)
        else:
            self.class_weight.fill_(1.0)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        shifted = logits - targets * self.margins
        return F.binary_cross_entropy_with_logits(self.scale * shifted, targets, reduction="none")


@LOSSES.register("eql", EQLOptions)
class EqualizationLoss(MultiLabelLoss):
    """EQL (Tan et al., CVPR 2020, eq. 4-6, sigmoid form): BCE weighted by w_c = 1 - E T_lambda(f_c) (1 - y_c), with
    f_c the share of training videos labelled c and T_lambda(f) = [f < lambda]; E = 1, as every video is a
    foreground sample (there is no background class). Rare classes' negative loss is switched off: other classes'
    positives no longer discourage them. Deterministic."""

    def __init__(self, class_counts: np.ndarray, num_videos: int, options: EQLOptions) -> None:
        super().__init__()
        frequency = np.asarray(class_counts, dtype=np.float64) / float(num_videos)
        self.register_buffer("rare", _float_tensor(frequency < options.frequency_threshold))

    @classmethod
    def from_options(cls, options: EQLOptions, stats: SplitStats) -> "EqualizationLoss":
        who = "loss eql (class frequencies = class counts / training videos)"
        return cls(stats.require("class_counts", who), stats.require("num_videos", who), options)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return bce * (1.0 - self.rare * (1.0 - targets))


@LOSSES.register("eql_videolt", EQLVideoLTOptions)
class VideoLTEqualizationLoss(MultiLabelLoss):
    """EQL as the VideoLT reference applies it: BCE weighted by 1 - beta * tail_c * (1 - y), beta a Bernoulli(drop_prob)
    draw per element, tail_c = 1 for classes with at most ``tail_threshold`` training videos. With drop_prob 1.76e-3
    it changes about one loss element in a thousand of the tail's: kept for comparison with the published code."""

    def __init__(self, class_counts: np.ndarray, options: EQLVideoLTOptions) -> None:
        super().__init__()
        counts = np.asarray(class_counts, dtype=np.float64)
        self.register_buffer("tail", _float_tensor(counts <= options.tail_threshold))
        self.drop_prob = options.drop_prob

    @classmethod
    def from_options(cls, options: EQLVideoLTOptions, stats: SplitStats) -> "VideoLTEqualizationLoss":
        return cls(stats.require("class_counts", "loss eql_videolt"), options)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        # torch.rand (global generator) keeps runs reproducible under the loop's seed.
        drop = (torch.rand(logits.shape, device=logits.device) < self.drop_prob).to(logits.dtype)
        return bce * (1.0 - drop * self.tail * (1.0 - targets))


# -- the multi-label long-tail baselines --------------------------------------------------------------------------


def _prior_log_odds(stats: SplitStats, who: str) -> np.ndarray:
    """log(p_c / (1 - p_c)) of each class's training frequency p_c = n_c / N, p clipped into (0, 1)."""
    counts = np.asarray(stats.require("class_counts", who), dtype=np.float64)
    videos = float(stats.require("num_videos", who))
    prior = np.clip(counts / videos, 0.5 / videos, 1.0 - 0.5 / videos)
    return np.log(prior) - np.log1p(-prior)


@dataclass(frozen=True)
class LogitAdjustedOptions:
    """tau: the scale of the prior's log-odds added to the logits during training (Menon et al. 2021: 1)."""

    tau: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        return [("tau", f"must be >= 0, got {self.tau}")] if self.tau < 0 else []


@LOSSES.register("logit_adjusted", LogitAdjustedOptions)
class LogitAdjustedBCELoss(MultiLabelLoss):
    """Logit adjustment (Menon et al., ICLR 2021) in a sigmoid form: BCE on z_c + tau log(p_c / (1 - p_c)), p_c the
    class's training frequency; predictions use z unadjusted.

    Why this form: Menon et al. add tau log(pi_y) to the softmax logits so that the trained logits estimate the
    class-balanced posterior instead of one tilted by the prior. A sigmoid output is one binary problem per class,
    whose prior is p_c against 1 - p_c; its log-prior ratio log(p_c / (1 - p_c)) is exactly the softmax offset's
    two-class case (log pi_1 - log pi_0). Training on z + tau log-odds makes z estimate the log-odds of class c
    under balanced classes (tau = 1), so a rare class is no longer pushed down by its rarity."""

    def __init__(self, offset: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("offset", _float_tensor(offset))

    @classmethod
    def from_options(cls, options: LogitAdjustedOptions, stats: SplitStats) -> "LogitAdjustedBCELoss":
        return cls(options.tau * _prior_log_odds(stats, "loss logit_adjusted"))

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits + self.offset, targets, reduction="none")


@dataclass(frozen=True)
class DistributionBalancedOptions:
    """The distribution-balanced loss (Wu et al., ECCV 2020), defaults of the authors' VOC-MLT configuration.
    map_alpha, map_beta, map_gamma: the smoothing r_hat = map_alpha + sigmoid(map_beta (r - map_gamma)) of the
    re-balancing weight r; neg_scale (lambda) and init_bias (kappa): the negative-tolerant regularisation; focal
    gamma and balance_param: the focal term the authors pair it with."""

    map_alpha: float = 0.1
    map_beta: float = 10.0
    map_gamma: float = 0.3
    neg_scale: float = 5.0
    init_bias: float = 0.05
    gamma: float = 2.0
    balance_param: float = 2.0

    def problems(self) -> list[tuple[str, str]]:
        found = [(name, f"must be > 0, got {getattr(self, name)}") for name in ("neg_scale", "balance_param")
                 if getattr(self, name) <= 0]
        found += [(name, f"must be >= 0, got {getattr(self, name)}")
                  for name in ("map_alpha", "map_beta", "init_bias", "gamma") if getattr(self, name) < 0]
        return found


@LOSSES.register("distribution_balanced", DistributionBalancedOptions)
class DistributionBalancedLoss(MultiLabelLoss):
    """Wu et al. (ECCV 2020), as their reference code computes it, per element (i, c):

    - re-balanced weighting: r_ic = (1 / n_c) / sum over the video's labels k of (1 / n_k) (the chance of c under
      class-aware sampling against the video's own chance), smoothed to map_alpha + sigmoid(map_beta (r - map_gamma))
      and applied to positives and negatives alike (a video without labels gets map_alpha + 1);
    - negative-tolerant regularisation: logits shifted by the class prior, b_c = -init_bias / neg_scale *
      log(N / n_c - 1), and a negative's logit scaled by neg_scale with its weight divided by it;
    - the focal term: balance_param (1 - p_t)^gamma times the weighted BCE, p_t from the unweighted BCE.
    """

    def __init__(self, class_counts: np.ndarray, num_videos: int, options: DistributionBalancedOptions) -> None:
        super().__init__()
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
        ratio = np.maximum(float(num_videos) / counts - 1.0, 1e-6)  # a class in every video: no shift, not -inf
        self.register_buffer("freq_inv", _float_tensor(1.0 / counts))
        self.register_buffer("bias", _float_tensor(-np.log(ratio) * options.init_bias / options.neg_scale))
        self.options = options

    @classmethod
    def from_options(cls, options: DistributionBalancedOptions, stats: SplitStats) -> "DistributionBalancedLoss":
        who = "loss distribution_balanced (class priors n_c / N)"
        return cls(stats.require("class_counts", who), stats.require("num_videos", who), options)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        o = self.options
        repeat_rate = (targets * self.freq_inv).sum(dim=1, keepdim=True)
        ratio = self.freq_inv / repeat_rate.clamp(min=torch.finfo(repeat_rate.dtype).tiny)
        weight = torch.sigmoid(o.map_beta * (ratio - o.map_gamma)) + o.map_alpha
        shifted = logits + self.bias
        scaled = shifted * (1 - targets) * o.neg_scale + shifted * targets
        weight = weight / o.neg_scale * (1 - targets) + weight * targets
        bce = F.binary_cross_entropy_with_logits(scaled, targets, reduction="none")
        if o.gamma == 0.0:
            return o.balance_param * weight * bce
        return o.balance_param * (1.0 - torch.exp(-bce)).pow(o.gamma) * weight * bce


@dataclass(frozen=True)
class AsymmetricOptions:
    """The asymmetric loss (Ridnik et al., ICCV 2021), defaults of the authors' training script: gamma_pos 0,
    gamma_neg 4, clip 0.05 (probability margin of negatives); eps guards the logarithms."""

    gamma_pos: float = 0.0
    gamma_neg: float = 4.0
    clip: float = 0.05
    eps: float = 1e-8

    def problems(self) -> list[tuple[str, str]]:
        found = [(n, f"must be >= 0, got {getattr(self, n)}") for n in ("gamma_pos", "gamma_neg")
                 if getattr(self, n) < 0]
        if not 0.0 <= self.clip < 1.0:
            found.append(("clip", f"must be in [0, 1), got {self.clip}"))
        if not 0.0 < self.eps < 1e-2:
            found.append(("eps", f"must be in (0, 0.01), got {self.eps}"))
        return found


@LOSSES.register("asymmetric", AsymmetricOptions)
class AsymmetricLoss(MultiLabelLoss):
    """ASL: -[y (1 - p)^gamma_pos log p + (1 - y) p_m^gamma_neg log(1 - p_m)], p = sigmoid(z), p_m = max(p - clip, 0)
    (the shifted probability of a negative). As in the authors' training script the focusing weights carry no
    gradient. Reduced by the mean like every loss here (the reference sums; Adam does not see the constant)."""

    def __init__(self, options: AsymmetricOptions) -> None:
        super().__init__()
        self.options = options

    @classmethod
    def from_options(cls, options: AsymmetricOptions, stats: SplitStats) -> "AsymmetricLoss":
        return cls(options)

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        o = self.options
        positive = torch.sigmoid(logits)
        negative = 1.0 - positive
        if o.clip > 0:
            negative = (negative + o.clip).clamp(max=1.0)
        loss = targets * torch.log(positive.clamp(min=o.eps)) + (1 - targets) * torch.log(negative.clamp(min=o.eps))
        if o.gamma_pos > 0 or o.gamma_neg > 0:
            with torch.no_grad():
                p_t = positive * targets + negative * (1 - targets)
                focus = (1.0 - p_t).pow(o.gamma_pos * targets + o.gamma_neg * (1 - targets))
            loss = loss * focus
        return -loss


# -- the registry's helpers -------------------------------------------------------------------------------------------



@LOSSES.register("cb", ClassBalancedOptions)
def class_balanced_loss(options: ClassBalancedOptions, stats: SplitStats) -> MultiLabelLoss:
    """Cui et al. 2019: the base loss (BCE or focal) weighted per class by the effective number of its videos."""
    weight = _float_tensor(class_balanced_weights(stats.require("class_counts", "loss cb"), options.beta))
    if options.base == "focal":
        return FocalLoss(options.gamma, 1.0, class_weight=weight)
    return BCELoss(class_weight=weight)


def list_losses() -> list[str]:
    return LOSSES.names()


def loss_options_class(name: str, where: str = "create_criterion") -> type:
    return LOSSES.options_class(name, where)


class NamedOptions(Protocol):
    """What :func:`create_criterion` reads from a recipe's loss section."""

    name: str
    options: Any


def create_criterion(loss_config: NamedOptions, stats: SplitStats) -> MultiLabelLoss:
    """Build the loss named ``loss_config.name`` with ``loss_config.options`` (its options dataclass or a mapping)
    for a split with statistics ``stats`` (``SplitStats.from_split(split)``; cb, ldam_drw and the EQLs read its
    class counts, eql its number of videos)."""
    return LOSSES.create(loss_config.name, loss_config.options, stats, where=f"create_criterion({loss_config.name!r})")
