"""The long-tail losses against hand-computed values on tiny cases, and the batch-mixing strategies."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from meid_bench.errors import MeidBenchError
from meid_bench.registry import SplitStats
from meid_bench.models.batch_mix import FrameStack, Mixup, create_batch_mix
from meid_bench.models.losses import class_balanced_weights, create_criterion, list_losses


@dataclass
class Config:
    name: str
    options: Any = field(default_factory=dict)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x))


def bce(logit: float, target: float) -> float:
    return softplus(logit) - target * logit


LOGITS = torch.tensor([[0.0, 2.0]])
TARGETS = torch.tensor([[1.0, 0.0]])
COUNTS = np.array([1, 10])


def test_the_losses_are_registered():
    assert list_losses() == ["asymmetric", "bce", "cb", "distribution_balanced", "eql", "eql_videolt", "focal",
                             "ldam_drw", "logit_adjusted"]


def test_logit_adjusted_by_hand():
    # counts 1 and 10 of 20 videos: priors 0.05 and 0.5, log-odds log(0.05 / 0.95) and 0.
    stats = SplitStats.from_counts(COUNTS, num_videos=20)
    criterion = create_criterion(Config("logit_adjusted", {"tau": 1.0}), stats)
    offset = math.log(0.05 / 0.95)
    expected = (bce(0.0 + offset, 1.0) + bce(2.0, 0.0)) / 2
    assert criterion(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-6)
    plain = create_criterion(Config("logit_adjusted", {"tau": 0.0}), stats)(LOGITS, TARGETS).item()
    assert plain == pytest.approx(create_criterion(Config("bce"), stats)(LOGITS, TARGETS).item(), rel=1e-6)
    with pytest.raises(ValueError, match="num_videos"):
        create_criterion(Config("logit_adjusted"), SplitStats.from_counts(COUNTS))


def _db_by_hand(logits, targets, counts, num_videos, alpha=0.1, beta=10.0, gamma_map=0.3, lam=5.0, kappa=0.05,
                gamma=2.0, balance=2.0):
    """The reference's steps written out with numpy, one element at a time."""
    logits, targets = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
    counts = np.asarray(counts, np.float64)
    out = np.zeros_like(logits)
    for i in range(logits.shape[0]):
        repeat = sum(targets[i, k] / counts[k] for k in range(len(counts)))
        for c in range(len(counts)):
            r = (1 / counts[c]) / repeat if repeat > 0 else math.inf
            w = 1 / (1 + math.exp(-beta * (r - gamma_map))) + alpha if r != math.inf else 1 + alpha
            z = logits[i, c] - math.log(num_videos / counts[c] - 1) * kappa / lam
            y = targets[i, c]
            if y == 0:
                z, w = z * lam, w / lam
            loss = bce(z, y)
            out[i, c] = balance * (1 - math.exp(-loss)) ** gamma * w * loss
    return out.mean()


def test_distribution_balanced_by_hand():
    counts, videos = np.array([2, 5, 12]), 20
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the last video has no label
    criterion = create_criterion(Config("distribution_balanced"), SplitStats.from_counts(counts, num_videos=videos))
    value = criterion(logits, targets).item()
    assert math.isfinite(value)
    assert value == pytest.approx(_db_by_hand(logits.numpy(), targets.numpy(), counts, videos), rel=1e-5)


def test_asymmetric_by_hand_and_its_margin():
    criterion = create_criterion(Config("asymmetric"), SplitStats.from_counts(COUNTS))
    p_pos, p_neg = 0.5, 1 / (1 + math.exp(-2.0))
    shifted = p_neg - 0.05  # the negative's probability after the margin
    expected = (-math.log(p_pos) - shifted ** 4 * math.log(1 - shifted)) / 2
    assert criterion(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-5)
    # A negative already below the margin costs nothing and gets no gradient.
    logits = torch.tensor([[-5.0]], requires_grad=True)
    loss = create_criterion(Config("asymmetric"), SplitStats.from_counts([3]))(logits, torch.tensor([[0.0]]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.item() == 0.0
    # Without focusing or margin it is BCE.
    plain = create_criterion(Config("asymmetric", {"gamma_neg": 0.0, "clip": 0.0}), SplitStats.from_counts(COUNTS))
    assert plain(LOGITS, TARGETS).item() == pytest.approx((bce(0.0, 1.0) + bce(2.0, 0.0)) / 2, rel=1e-5)


def test_bce_by_hand_with_and_without_mask():
    criterion = create_criterion(Config("bce"), SplitStats.from_counts(COUNTS))
    expected = (bce(0.0, 1.0) + bce(2.0, 0.0)) / 2
    assert criterion(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-6)
    # A masked element contributes 0 but still counts in the mean (the reference's BCE weight semantics).
    masked = criterion(LOGITS, TARGETS, torch.tensor([[1.0, 0.0]]))
    assert masked.item() == pytest.approx(bce(0.0, 1.0) / 2, rel=1e-6)


def test_bce_accepts_half_precision_logits_and_soft_targets():
    criterion = create_criterion(Config("bce"), SplitStats.from_counts(COUNTS))
    value = criterion(LOGITS.half(), torch.tensor([[0.25, 0.75]]))
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx((bce(0.0, 0.25) + bce(2.0, 0.75)) / 2, rel=1e-3)


def test_focal_by_hand():
    criterion = create_criterion(Config("focal", {"gamma": 2.0, "alpha": 0.5}), SplitStats.from_counts(COUNTS))
    terms = []
    for logit, target in ((0.0, 1.0), (2.0, 0.0)):
        loss = bce(logit, target)
        terms.append(0.5 * (1 - math.exp(-loss)) ** 2 * loss)
    assert criterion(LOGITS, TARGETS).item() == pytest.approx(sum(terms) / 2, rel=1e-5)
    # gamma 0 and alpha 1 is plain BCE.
    plain = create_criterion(Config("focal", {"gamma": 0.0}), SplitStats.from_counts(COUNTS))
    reference = create_criterion(Config("bce"), SplitStats.from_counts(COUNTS))(LOGITS, TARGETS).item()
    assert plain(LOGITS, TARGETS).item() == pytest.approx(reference)


def test_class_balanced_weights_and_loss_by_hand():
    # beta 0.9: w = 0.1 / (1 - 0.9^n): n=1 -> 1; n=10 -> 0.1 / (1 - 0.9^10); normalised to sum to C = 2.
    raw = np.array([1.0, 0.1 / (1 - 0.9**10)])
    expected_weights = raw / raw.sum() * 2
    np.testing.assert_allclose(class_balanced_weights(COUNTS, 0.9), expected_weights)
    criterion = create_criterion(Config("cb", {"beta": 0.9}), SplitStats.from_counts(COUNTS))
    expected = (expected_weights[0] * bce(0.0, 1.0) + expected_weights[1] * bce(2.0, 0.0)) / 2
    assert criterion(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-5)
    focal_base = create_criterion(Config("cb", {"beta": 0.9, "base": "focal", "gamma": 1.0}), SplitStats.from_counts(COUNTS))
    terms = [w * (1 - math.exp(-bce(z, y))) * bce(z, y) for w, z, y in zip(expected_weights, (0.0, 2.0), (1.0, 0.0))]
    assert focal_base(LOGITS, TARGETS).item() == pytest.approx(sum(terms) / 2, rel=1e-5)


def test_class_balanced_weights_survive_zero_counts():
    weights = class_balanced_weights(np.array([0, 5, 100]), 0.9999)
    assert np.isfinite(weights).all() and weights.sum() == pytest.approx(3.0)
    assert weights[0] > weights[1] > weights[2]


def test_ldam_margins_scale_and_deferred_reweighting_by_hand():
    counts = np.array([1, 16])  # n^-1/4 = (1, 0.5) -> margins (0.5, 0.25) with max margin 0.5
    options = {"max_margin": 0.5, "scale": 30.0, "drw_epoch": 3, "drw_beta": 0.9}
    criterion = create_criterion(Config("ldam_drw", options), SplitStats.from_counts(counts))
    torch.testing.assert_close(criterion.margins, torch.tensor([0.5, 0.25]))
    logits = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Only positives are shifted by their own class's margin, then everything is scaled by 30.
    elements = [bce(30 * 0.5, 1.0), bce(30 * 1.0, 0.0), bce(30 * 1.0, 0.0), bce(30 * 0.75, 1.0)]
    weights_after = class_balanced_weights(counts, 0.9)
    criterion.set_epoch(2)
    assert criterion(logits, targets).item() == pytest.approx(sum(elements) / 4, rel=1e-5)
    criterion.set_epoch(3)
    weighted = [weights_after[0] * elements[0], weights_after[1] * elements[1],
                weights_after[0] * elements[2], weights_after[1] * elements[3]]
    assert criterion(logits, targets).item() == pytest.approx(sum(weighted) / 4, rel=1e-5)
    criterion.set_epoch(0)  # a resumed or restarted schedule switches back
    assert criterion(logits, targets).item() == pytest.approx(sum(elements) / 4, rel=1e-5)


def test_ldam_reference_defaults_and_the_deferred_epoch_is_required():
    criterion = create_criterion(Config("ldam_drw", {"drw_epoch": 50}), SplitStats.from_counts(np.array([10, 1000])))
    assert criterion.scale == 30.0 and criterion.drw_epoch == 50
    assert criterion.margins.max().item() == pytest.approx(0.5)
    # null means "the first lr decay": a recipe resolves it against its schedule before a loss is built.
    with pytest.raises(ValueError, match="drw_epoch is null"):
        create_criterion(Config("ldam_drw"), SplitStats.from_counts(np.array([10, 1000])))


def test_eql_switches_off_the_negative_loss_of_classes_rarer_than_lambda():
    # Tan et al. 2020: w = 1 - T_lambda(f_c) (1 - y), f_c = videos with c / all videos. Class 1: 5 of 1,000
    # videos (f = 5e-3 < lambda = 1e-2): its negatives count for nothing; class 0 (f = 0.2) is untouched.
    counts = np.array([200, 5])
    logits = torch.tensor([[0.5, -1.0], [2.0, 1.5]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    criterion = create_criterion(Config("eql", {"frequency_threshold": 1e-2}), SplitStats.from_counts(counts, num_videos=1000))
    kept = [bce(0.5, 1.0), bce(-1.0, 1.0), bce(2.0, 0.0)]
    assert criterion(logits, targets).item() == pytest.approx(sum(kept) / 4, rel=1e-6)
    assert criterion(logits, targets).item() == criterion(logits, targets).item()  # no random drop
    # At Tan et al.'s lambda 1.76e-3 neither class is rare here: plain BCE.
    paper = create_criterion(Config("eql"), SplitStats.from_counts(counts, num_videos=1000))
    assert paper(logits, targets).item() == pytest.approx((sum(kept) + bce(1.5, 0.0)) / 4, rel=1e-6)
    # Soft targets (after mixing) keep a share (the target) of the negative loss's suppression.
    soft = criterion(torch.zeros(1, 2), torch.tensor([[0.0, 0.5]])).item()
    assert soft == pytest.approx((bce(0.0, 0.0) + 0.5 * bce(0.0, 0.5)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="num_videos"):
        create_criterion(Config("eql"), SplitStats.from_counts(counts))


def test_videolt_eql_drops_only_tail_class_negatives():
    counts = np.array([200, 50])  # class 1 is tail (<= 100)
    logits = torch.tensor([[0.5, -1.0], [2.0, 1.5]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    always = create_criterion(Config("eql_videolt", {"tail_threshold": 100, "drop_prob": 1.0}), SplitStats.from_counts(counts))
    # Element (1, 1) is a tail-class negative: dropped. Everything else is plain BCE.
    kept = [bce(0.5, 1.0), bce(-1.0, 1.0), bce(2.0, 0.0)]
    assert always(logits, targets).item() == pytest.approx(sum(kept) / 4, rel=1e-6)
    never = create_criterion(Config("eql_videolt", {"drop_prob": 0.0}), SplitStats.from_counts(counts))
    assert never(logits, targets).item() == pytest.approx((sum(kept) + bce(1.5, 0.0)) / 4, rel=1e-6)


def test_videolt_eql_reference_rate_drops_about_that_share_of_tail_negatives():
    torch.manual_seed(0)
    counts = np.array([50])
    criterion = create_criterion(Config("eql_videolt", {"drop_prob": 0.25}), SplitStats.from_counts(counts))
    logits = torch.zeros(20000, 1)
    value = criterion(logits, torch.zeros(20000, 1)).item()
    assert value / math.log(2) == pytest.approx(0.75, abs=0.02)


def test_create_criterion_rejects_unknown_losses_and_options():
    with pytest.raises(MeidBenchError, match="unknown loss 'ldam'"):
        create_criterion(Config("ldam"), SplitStats.from_counts(COUNTS))
    with pytest.raises(MeidBenchError, match="create_criterion\\('focal'\\): gama: unknown key"):
        create_criterion(Config("focal", {"gama": 2}), SplitStats.from_counts(COUNTS))
    with pytest.raises(MeidBenchError, match="beta: must be in"):
        create_criterion(Config("cb", {"beta": 1.0}), SplitStats.from_counts(COUNTS))


# -- batch mixing ----------------------------------------------------------------------------------------------------


def test_mixup_is_one_convex_combination_of_the_batch_and_a_permutation():
    features = torch.arange(6, dtype=torch.float32).view(6, 1, 1).expand(6, 3, 2).clone()  # video i is all i
    targets = torch.eye(6)
    mixed = Mixup(alpha=1.0, seed=3)(features, targets)
    # Row i of the targets is l * e_i + (1 - l) * e_perm(i), with one l for the whole batch.
    torch.testing.assert_close(mixed.targets.sum(dim=1), torch.ones(6))
    own = mixed.targets.diagonal()
    moved = own < 1
    assert moved.any()
    torch.testing.assert_close(own[moved], own[moved][0].expand(int(moved.sum())))
    # Features mixed with the same weights.
    expected = mixed.targets @ torch.arange(6.0)
    torch.testing.assert_close(mixed.features, expected.view(6, 1, 1).expand(6, 3, 2))
    assert mixed.mask is None
    masked = Mixup(alpha=1.0, seed=3)(features, targets, torch.ones(6, 6))
    torch.testing.assert_close(masked.mask, torch.ones(6, 6))


def test_mixup_is_reproducible_and_resumable_from_its_state():
    features, targets = torch.randn(6, 3, 2), (torch.rand(6, 4) > 0.5).float()
    first = Mixup(seed=1)
    first(features, targets)
    state = first.state_dict()
    expected = first(features, targets)
    resumed = Mixup(seed=99)
    resumed.load_state_dict(state)
    again = resumed(features, targets)
    torch.testing.assert_close(again.features, expected.features)
    torch.testing.assert_close(again.targets, expected.targets)


def test_framestack_takes_frames_by_ap_share_and_mixes_labels_with_the_same_weights():
    # A seed whose permutation of two videos swaps them, so each video is mixed with the other.
    seed = next(s for s in range(100) if np.random.Generator(np.random.PCG64(s)).permutation(2).tolist() == [1, 0])
    num_frames = 10
    strategy = FrameStack(num_classes=2, mix_fraction=1.0, seed=seed)
    strategy.update_class_ap(np.array([0.8, 0.2]))
    # Video 0 (class 0, AP 0.8) gives up frames: its partner share is beta = 0.8 / (0.8 + 0.2) = 0.8.
    time = torch.arange(num_frames, dtype=torch.float32).view(1, -1, 1) / 100
    features = torch.stack([torch.zeros(num_frames, 1), torch.ones(num_frames, 1)]) + time
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = strategy(features, targets)
    # Video 1 (AP 0.2) keeps 0.8 of itself: both mixes weigh class 1 by 0.8.
    torch.testing.assert_close(out.targets, torch.tensor([[0.2, 0.8], [0.2, 0.8]]))
    # Video 0: int(0.8 * 10) = 8 partner frames first, then 2 of its own; video 1: 2 from video 0, then 8 own.
    assert (out.features[0, :8, 0] >= 1).all() and (out.features[0, 8:, 0] < 1).all()
    assert (out.features[1, :2, 0] < 1).all() and (out.features[1, 2:, 0] >= 1).all()
    # Source frames are uniformly spaced over the source video, in time order.
    torch.testing.assert_close(out.features[0, 8:, 0], torch.tensor([0.0, 0.09]))
    torch.testing.assert_close(out.features[1, :2, 0], torch.tensor([0.0, 0.09]))


def test_framestack_mixes_half_the_batch_and_uses_even_shares_before_any_ap():
    strategy = FrameStack(num_classes=3, seed=5)  # mix_fraction 0.5 by default
    np.testing.assert_array_equal(strategy.partner_shares(torch.eye(3), np.array([1, 2, 0])), [0.5, 0.5, 0.5])
    features, targets = torch.randn(8, 6, 4), (torch.rand(8, 3) > 0.5).float()
    mask = torch.ones(8, 3)
    mask[0, 0] = 0.0
    out = strategy(features, targets, mask)
    torch.testing.assert_close(out.features[4:], features[4:])
    torch.testing.assert_close(out.targets[4:], targets[4:])
    assert out.features.shape == features.shape and out.mask.shape == mask.shape
    assert out.mask[:4].sum() >= 4 * 3 - 2  # the one zero reaches at most two mixed rows (itself and its partner)


def test_framestack_per_positive_video_ap_reads_only_the_videos_own_labels():
    strategy = FrameStack(num_classes=4, seed=0, video_ap="positives")
    strategy.update_class_ap(np.array([0.9, 0.1, 0.5, 0.3]))
    targets = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 1, 0], [0.0, 0, 0, 0]])
    perm = np.array([1, 2, 0])
    # Per positive: video 0 -> 0.9, video 1 -> (0.9 + 0.1 + 0.5) / 3 = 0.5, video 2 (no label) -> 0.
    # The reference form divides by all 4 classes instead: 0.225 and 0.375, which favours videos with many labels.
    video_ap = np.array([0.9, 0.5, 0.0])
    expected = video_ap / (video_ap + video_ap[perm])
    np.testing.assert_allclose(strategy.partner_shares(targets, perm), expected)
    reference = FrameStack(num_classes=4, seed=0)
    reference.update_class_ap(np.array([0.9, 0.1, 0.5, 0.3]))
    ref_ap = np.array([0.225, 0.375, 0.0])
    np.testing.assert_allclose(reference.partner_shares(targets, perm), ref_ap / (ref_ap + ref_ap[perm]))
    assert create_batch_mix(Config("framestack", {"video_ap": "positives"}), SplitStats(4)).video_ap == "positives"


def test_framestack_ap_update_keeps_previous_values_where_nan_and_round_trips_its_state():
    strategy = FrameStack(num_classes=3, seed=0)
    strategy.update_class_ap(np.array([0.1, 0.2, 0.3]))
    strategy.update_class_ap(np.array([0.5, np.nan, 0.7]))
    np.testing.assert_allclose(strategy.class_ap, [0.5, 0.2, 0.7])
    copy = FrameStack(num_classes=3, seed=1)
    copy.load_state_dict(strategy.state_dict())
    np.testing.assert_allclose(copy.class_ap, strategy.class_ap)
    with pytest.raises(ValueError):
        strategy.update_class_ap(np.zeros(2))


def test_create_batch_mix():
    assert create_batch_mix(Config("none"), SplitStats(3)) is None
    assert isinstance(create_batch_mix(Config("mixup", {"alpha": 0.4}), SplitStats(3)), Mixup)
    assert isinstance(create_batch_mix(Config("framestack"), SplitStats(3)), FrameStack)
    with pytest.raises(MeidBenchError, match="unknown batch_mix 'cutmix'"):
        create_batch_mix(Config("cutmix"), SplitStats(3))
    with pytest.raises(MeidBenchError, match="alpha: must be > 0"):
        create_batch_mix(Config("mixup", {"alpha": 0}), SplitStats(3))
