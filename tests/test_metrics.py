"""meid_bench.metrics: AP equal to scikit-learn's, the no-positive / no-label policies, group means, top-k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from meid_bench.errors import MeidBenchError
from meid_bench.metrics import (MeanAP, average_precision, group_mean_average_precision, mean_average_precision,
                                score_scale, top_k_hit_accuracy)


def sklearn_per_class(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    out = np.full(targets.shape[1], np.nan)
    for klass in range(targets.shape[1]):
        if targets[:, klass].any():
            out[klass] = average_precision_score(targets[:, klass], scores[:, klass])
    return out


def sparse_targets(rng: np.random.Generator, videos: int, classes: int, extra: float = 0.3) -> np.ndarray:
    targets = np.zeros((videos, classes), dtype=np.uint8)
    targets[np.arange(videos), rng.integers(0, classes, videos)] = 1
    more = np.flatnonzero(rng.random(videos) < extra)
    targets[more, rng.integers(0, classes, len(more))] = 1
    targets[rng.integers(0, videos, 5)] = 0  # a few videos without labels: negatives everywhere
    return targets


def assert_matches_sklearn(scores: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
    ours = average_precision(scores, targets, **kwargs)
    reference = sklearn_per_class(targets, scores)
    evaluated = ~np.isnan(reference)
    assert np.array_equal(np.isnan(ours), ~evaluated)
    assert np.all(np.abs(ours[evaluated] - reference[evaluated]) < 1e-9)
    return ours


# 150 classes: more than two blocks of 64, so the threaded path splits the classes.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_scores_match_sklearn(dtype):
    rng = np.random.default_rng(1)
    targets = sparse_targets(rng, 1100, 150)  # more than one 512-row tile
    scores = rng.normal(size=targets.shape).astype(dtype)
    ours = assert_matches_sklearn(scores, targets)
    assert np.array_equal(ours, average_precision(scores, targets, num_threads=1), equal_nan=True)
    assert np.array_equal(ours, average_precision(np.asfortranarray(scores), targets), equal_nan=True)


def test_tie_heavy_scores_match_sklearn():
    rng = np.random.default_rng(2)
    targets = sparse_targets(rng, 300, 70, extra=1.5)
    scores = rng.integers(0, 4, size=targets.shape).astype(np.float32) / 4  # four distinct values only
    assert_matches_sklearn(scores, targets)


def test_saturated_scores_match_sklearn():
    rng = np.random.default_rng(3)
    targets = sparse_targets(rng, 300, 70)
    logits = rng.normal(scale=30.0, size=targets.shape)
    scores = torch.sigmoid(torch.from_numpy(logits).float()).numpy()
    assert (scores == 1.0).mean() > 0.2  # many scores exactly 1.0: tied at the top
    assert_matches_sklearn(scores, targets)


def test_single_positive_per_class_matches_sklearn():
    rng = np.random.default_rng(4)
    targets = np.zeros((200, 60), dtype=np.uint8)
    targets[rng.permutation(200)[:60], np.arange(60)] = 1
    scores = rng.random(targets.shape)
    ours = assert_matches_sklearn(scores, targets)
    assert not np.isnan(ours).any()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_any_small_tied_case_matches_sklearn(videos, classes, levels, seed):
    rng = np.random.default_rng(seed)
    targets = (rng.random((videos, classes)) < 0.3).astype(np.uint8)
    scores = rng.integers(0, levels, size=(videos, classes)).astype(np.float64)  # few levels: ties everywhere
    assert_matches_sklearn(scores, targets)


def test_torch_inputs_give_the_same_values():
    rng = np.random.default_rng(5)
    targets = sparse_targets(rng, 120, 20)
    scores = rng.normal(size=targets.shape).astype(np.float32)
    from_numpy = average_precision(scores, targets)
    from_torch = average_precision(torch.from_numpy(scores), torch.from_numpy(targets.astype(bool)))
    from_half = average_precision(torch.from_numpy(scores).bfloat16(), torch.from_numpy(targets))
    assert np.array_equal(from_numpy, from_torch, equal_nan=True)
    widened = torch.from_numpy(scores).bfloat16().float().numpy()
    assert np.nanmax(np.abs(from_half - sklearn_per_class(targets, widened))) < 1e-9


def test_ties_are_one_threshold_hand_computed():
    # Sorted: 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.3 (neg). The tied pair enters together: precision 2/3 there,
    # AP = (1 + 2/3) / 2 = 5/6. Ranking the tie in array order would give (1 + 1) / 2 = 1.
    scores = np.array([[0.9], [0.8], [0.8], [0.3]])
    targets = np.array([[1], [0], [1], [0]])
    assert average_precision(scores, targets)[0] == pytest.approx(5 / 6, abs=1e-15)
    flipped = average_precision(scores[[0, 2, 1, 3]], targets[[0, 2, 1, 3]])[0]
    assert flipped == pytest.approx(5 / 6, abs=1e-15)


def test_unlabelled_videos_are_negatives():
    scores = np.array([[0.9], [0.8], [0.2]])
    targets = np.array([[1], [0], [1]])
    with_unlabelled = np.vstack([scores, [[0.95]]]), np.vstack([targets, [[0]]])
    assert average_precision(scores, targets)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(*with_unlabelled)[0] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_class_without_positive_is_left_out_of_means():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5]])
    targets = np.array([[1, 0, 0], [0, 0, 0]])
    ap = average_precision(scores, targets)
    assert ap[0] == 1.0 and np.isnan(ap[1]) and np.isnan(ap[2])
    assert mean_average_precision(ap) == MeanAP(value=1.0, classes_evaluated=1, classes_without_positives=2)


def test_group_means_hand_computed():
    ap = np.array([0.5, 1.0, np.nan, 0.25, np.nan, np.nan])
    groups = {"head": np.array([0, 1]), "medium": np.array([2, 3]), "tail": np.array([4, 5])}
    result = group_mean_average_precision(ap, groups)
    assert result["head"] == MeanAP(0.75, 2, 0)
    assert result["medium"] == MeanAP(0.25, 1, 1)
    assert result["tail"] == MeanAP(None, 0, 2)  # no evaluated class: None, never NaN
    overall = mean_average_precision(ap)
    assert overall.value == pytest.approx(1.75 / 3) and overall.classes_evaluated == 3


def test_top_k_ties_never_help_and_unlabelled_videos_are_counted():
    scores = np.array([
        [0.9, 0.9, 0.1, 0.0],   # label 1 tied with class 0: 2 classes >= it, a miss at k=1, a hit at k=2
        [0.1, 0.2, 0.3, 0.4],   # labels 0 and 3: class 3 ranks first: a hit at k=1
        [0.5, 0.5, 0.5, 0.5],   # constant row, label 2: 4 classes >= it: a hit only at k=4
        [0.3, 0.2, 0.1, 0.0],   # no label: left out
    ])
    targets = np.array([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]])
    result = top_k_hit_accuracy(scores, targets, ks=(1, 2, 4))
    assert result.hits == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 4: 1.0}
    assert result.videos_evaluated == 3 and result.videos_without_labels == 1
    empty = top_k_hit_accuracy(scores, np.zeros_like(targets), ks=(1,))
    assert empty.hits == {1: None} and empty.videos_without_labels == 4


def test_bad_inputs_raise_meid_bench_error():
    scores = np.array([[0.1, np.nan], [0.3, 0.4]])
    targets = np.array([[1, 0], [0, 1]])
    with pytest.raises(MeidBenchError, match="NaN or infinite"):
        average_precision(scores, targets)
    with pytest.raises(MeidBenchError, match="NaN or infinite"):
        average_precision(np.array([[np.inf, 0.0], [0.3, 0.4]]), targets)
    with pytest.raises(MeidBenchError, match="0 or 1"):
        average_precision(np.ones((2, 2)), np.array([[2, 0], [0, 1]]))
    with pytest.raises(MeidBenchError, match="shape"):
        average_precision(np.ones((2, 2)), np.ones((3, 2)))
    with pytest.raises(MeidBenchError, match="2-D"):
        average_precision(np.ones(4), np.ones(4))


def test_non_finite_score_in_a_block_without_positives_is_caught():
    scores = np.zeros((10, 130))
    targets = np.zeros((10, 130), dtype=np.uint8)
    targets[0, 0] = 1
    scores[3, 100] = np.nan  # classes 64..127 have no positive: their block is never sorted
    with pytest.raises(MeidBenchError, match=r"1 scores are NaN or infinite \(first at row 3, column 100"):
        average_precision(scores, targets)


@pytest.mark.parametrize("shape", [(7, 3), (13, 11), (64, 5)])
@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int64])
def test_positive_positions_match_np_nonzero(shape, dtype):
    from meid_bench.metrics import _nonzero
    targets = (np.random.default_rng(6).random(shape) < 0.15).astype(dtype)
    targets[-1, -1] = 1  # a positive in the tail bytes past the last whole 8-byte word
    for got, want in zip(_nonzero(targets), np.nonzero(targets)):
        assert np.array_equal(got, want)


def test_score_scale():
    assert score_scale(np.array([[0.0, 1.0], [0.5, 0.25]])) == "probability"
    assert score_scale(np.array([[-3.0, 1.0]])) == "logit"
    assert score_scale(np.array([[0.5, 1.5]])) == "logit"


def test_per_class_monotone_rescaling_leaves_every_class_ap_unchanged():
    # Why tau-normalisation (w_c / ||w_c||^tau, bias dropped) and post-hoc logit adjustment are not baselines under
    # per-class mAP: each maps a class's scores through one increasing function (z -> a_c z + b_c, a_c > 0), which
    # keeps that class's ranking of the videos, so its AP is the same (docs/models.md).
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(300, 12)).astype(np.float32)
    targets = (rng.random((300, 12)) < 0.1).astype(np.uint8)
    weight_norms = rng.uniform(0.2, 5.0, size=12).astype(np.float32)
    bias = rng.normal(size=12).astype(np.float32)
    tau_normalised = (scores - bias) / weight_norms
    adjusted = scores - 3.0 * np.log(rng.uniform(0.001, 0.5, size=12)).astype(np.float32)
    base = average_precision(scores, targets)
    np.testing.assert_allclose(average_precision(tau_normalised, targets), base, rtol=0, atol=1e-12)
    np.testing.assert_allclose(average_precision(adjusted, targets), base, rtol=0, atol=1e-12)
    # A change of direction (what classifier re-training does) is not such a map and moves the APs.
    mixed = scores + 0.8 * np.roll(scores, 1, axis=1)
    assert not np.allclose(average_precision(mixed, targets), base)
