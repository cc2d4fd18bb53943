"""The long-tail profile and the multi-label selection: definitions and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meid_bench.build.profile import class_targets, rank_order, relative_profile
from meid_bench.build.select import _row_sums, label_counts, select_videos
from meid_bench.errors import MeidBenchError


@pytest.mark.parametrize("profile", ["exponential", "pareto"])
@pytest.mark.parametrize("imbalance", [1.0, 10.0, 100.0])
def test_profile_spans_exactly_the_imbalance(profile, imbalance):
    relative = relative_profile(20, imbalance, profile)
    assert relative[0] == pytest.approx(1.0) and relative[-1] == pytest.approx(1.0 / imbalance)
    assert np.all(np.diff(relative) <= 1e-12)  # never increases along the ranks


def test_exponential_profile_formula():
    relative = relative_profile(5, 16.0, "exponential")
    assert relative == pytest.approx([1, 0.5, 0.25, 0.125, 0.0625])


def test_targets_are_the_largest_profile_the_counts_allow():
    counts = np.array([50, 400, 100, 30, 1000])
    targets = class_targets(counts, 10.0)
    assert np.all(targets <= counts + 1e-9)
    assert np.any(np.isclose(targets, counts))  # some class binds the scale
    order = rank_order(counts)
    assert order.tolist() == [4, 1, 2, 0, 3]
    assert targets[order[0]] / targets[order[-1]] == pytest.approx(10.0)


def test_rank_order_breaks_ties_by_class_id():
    assert rank_order(np.array([5, 7, 5, 7])).tolist() == [1, 3, 0, 2]


def test_imbalance_below_one_is_an_error():
    with pytest.raises(MeidBenchError, match="--imbalance 0.5"):
        relative_profile(10, 0.5)


@st.composite
def label_sets(draw):
    num_classes = draw(st.integers(2, 8))
    videos = draw(st.lists(st.sets(st.integers(0, num_classes - 1), max_size=num_classes), min_size=1,
                           max_size=60))
    # Every class appears at least once, as the builder requires.
    videos += [{k} for k in range(num_classes)]
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in videos])]).astype(np.int64)
    values = np.array([k for v in videos for k in sorted(v)], dtype=np.int32)
    return num_classes, offsets, values


@settings(max_examples=60, deadline=None)
@given(label_sets(), st.floats(1.0, 20.0), st.integers(0, 3))
def test_selection_invariants(data, imbalance, seed):
    num_classes, offsets, values = data
    counts = np.bincount(values, minlength=num_classes)
    targets = np.maximum(class_targets(counts, imbalance), 1.0)
    selection = select_videos(offsets, values, targets, seed)
    # Counts are exactly those of the kept videos with all their labels; no class is left empty.
    assert np.array_equal(label_counts(offsets, values, selection.selected, num_classes), selection.counts)
    assert selection.counts.min() >= 1
    # Videos without labels are never kept.
    assert not np.any(selection.selected & (np.diff(offsets) == 0))
    # Same seed, same selection.
    again = select_videos(offsets, values, targets, seed)
    assert np.array_equal(again.selected, selection.selected)


def test_selection_hits_targets_when_single_label():
    # Single-label videos make every target reachable: the selection must hit each rounded target exactly.
    per_class = [40, 25, 10, 6]
    values = np.repeat(np.arange(4), per_class).astype(np.int32)
    offsets = np.arange(len(values) + 1, dtype=np.int64)
    targets = np.array([20.0, 11.0, 4.0, 2.0])
    selection = select_videos(offsets, values, targets, seed=0)
    assert selection.counts.tolist() == [20, 11, 4, 2]


def test_seed_changes_only_tie_breaking():
    values = np.repeat(np.arange(2), [30, 30]).astype(np.int32)
    offsets = np.arange(61, dtype=np.int64)
    targets = np.array([10.0, 5.0])
    a = select_videos(offsets, values, targets, seed=0)
    b = select_videos(offsets, values, targets, seed=1)
    assert a.counts.tolist() == b.counts.tolist() == [10, 5]
    assert not np.array_equal(a.selected, b.selected)


@settings(max_examples=40, deadline=None)
@given(label_sets(), st.integers(0, 2**31))
def test_ragged_sums_are_bitwise_those_of_a_sparse_product(data, seed):
    # The selection once multiplied a scipy CSR label matrix by per-class gains; its ragged replacement must give
    # the same floats to the last bit (ties and orderings depend on them), so the same selected videos.
    from scipy import sparse

    num_classes, offsets, values = data
    offsets = np.concatenate([[0], offsets])  # a video without labels, first
    matrix = sparse.csr_matrix((np.ones(len(values)), values, offsets), shape=(len(offsets) - 1, num_classes))
    gains = np.random.default_rng(seed).standard_normal(num_classes) * 10.0 ** np.arange(num_classes)
    owners = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    assert np.array_equal(_row_sums(owners, values, gains, len(offsets) - 1), matrix @ gains)
    by_class = owners[np.argsort(values, kind="stable")]
    assert np.array_equal(by_class, matrix.tocsc().indices)
