"""Under bfloat16 autocast (what training uses on CUDA) the quantities that want float32 keep it: the attention
scores before the softmax and the internal distillation's products. Checked under the CPU's bfloat16 autocast,
which casts matrix products the same way: inside, the results are those of float32, bit for bit."""

from __future__ import annotations

import pytest
import torch

from meid_bench.models import distill
from meid_bench.models.layers import AttentionPooling


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_attention_scores_before_the_softmax_stay_float32():
    torch.manual_seed(0)
    attention = AttentionPooling(32, 8)
    frames = torch.randn(4, 60, 32)
    expected_scores, expected_weights = attention.scores(frames), attention.weights(frames)
    with _bf16():
        scores, weights = attention.scores(frames), attention.weights(frames)
        low = frames @ torch.randn(32, 32)  # what autocast does to an ordinary product here
    assert low.dtype == torch.bfloat16  # (the autocast is on)
    assert scores.dtype == torch.float32 and torch.equal(scores, expected_scores)
    assert weights.dtype == torch.float32 and torch.equal(weights, expected_weights)
    # bf16 activations coming in (the embedding under autocast) are scored in float32 too
    with _bf16():
        from_bf16 = attention.scores(frames.bfloat16())
    assert from_bf16.dtype == torch.float32
    assert torch.equal(from_bf16, attention.scores(frames.bfloat16().float()))


@pytest.mark.parametrize("form", ["mmd", "moments"])
def test_distillation_distances_are_float32_under_autocast(form):
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(64, 16, generator=generator), torch.randn(64, 16, generator=generator) + 0.3
    weights = (torch.rand(64, generator=generator) > 0.2).float()
    expected = distill.distance(form, student, weights, teacher, weights)
    with _bf16():
        value = distill.distance(form, student, weights, teacher, weights)
    assert value.dtype == torch.float32 and torch.equal(value, expected) and expected > 0


def test_frame_groups_are_unchanged_under_autocast():
    generator = torch.Generator().manual_seed(2)
    labels = torch.rand(8, 10, 12, generator=generator) * (torch.rand(8, 10, 12, generator=generator) > 0.8)
    labels = labels * 1e-3  # small soft labels, as mixing makes them
    tail = torch.zeros(12, dtype=torch.bool)
    tail[8:] = True
    expected = distill.frame_groups(labels, tail, 10)
    with _bf16():
        got = distill.frame_groups(labels, tail, 10)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
