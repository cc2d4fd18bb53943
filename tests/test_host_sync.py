"""The per-step work that ran on the host on an accelerator now runs on the device: FrameStack's shares and frame
sources, mixup's permutation (a non-blocking copy), the streamed path's per-frame label rows. Checked on the CPU
against the host computations they replace: the same indices, the same shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meid_bench.models.batch_mix import FrameStack, Mixup, stack_sources, stack_sources_on_device, to_device_async


@pytest.mark.parametrize("num_frames", [1, 2, 7, 60, 150])
def test_frame_sources_on_the_device_are_the_hosts(num_frames):
    rng = np.random.default_rng(num_frames)
    exact = np.array([0.0, 1.0, 0.5, 1 / 3, 2 / 3, 0.25, 0.999999, 1e-9])
    beta = np.concatenate([exact, rng.random(200), np.arange(num_frames + 1) / num_frames])
    perm = rng.permutation(len(beta))
    video, frame = stack_sources(beta, perm, num_frames)
    on_device = stack_sources_on_device(torch.from_numpy(beta), torch.from_numpy(perm), num_frames)
    assert np.array_equal(on_device[0].numpy(), video) and np.array_equal(on_device[1].numpy(), frame)


@pytest.mark.parametrize("video_ap", ["all_classes", "positives"])
def test_partner_shares_on_the_device_are_the_hosts(video_ap):
    rng = np.random.default_rng(4)
    strategy = FrameStack(12, seed=0, video_ap=video_ap)
    strategy.update_class_ap(rng.random(12))
    targets = torch.from_numpy((rng.random((32, 12)) > 0.7).astype(np.float32))
    targets[3] = 0.0  # a video without labels: share 0.5 with a partner of AP ~0
    perm = rng.permutation(32)
    host = strategy.partner_shares(targets, perm)
    device = strategy.partner_shares_on_device(targets, torch.from_numpy(perm)).numpy()
    np.testing.assert_allclose(device, host, rtol=1e-12, atol=0)
    strategy.update_class_ap(np.zeros(12))  # the cached device copy follows the update
    assert np.array_equal(strategy.partner_shares_on_device(targets, torch.from_numpy(perm)).numpy(),
                          np.full(32, 0.5))


def test_mixup_copies_its_permutation_without_changing_it():
    values = np.random.default_rng(0).permutation(17)
    copied = to_device_async(values, torch.device("cpu"))
    assert copied.dtype == torch.int64 and np.array_equal(copied.numpy(), values)
    features, targets = torch.randn(17, 3, 4), torch.rand(17, 5)
    a, b = Mixup(seed=3)(features, targets), Mixup(seed=3)(features, targets)
    assert torch.equal(a.features, b.features) and torch.equal(a.targets, b.targets)
