"""meid-bench's backbones and preprocessing against torchvision's own (skipped where torchvision is not installed).

CI does not install torchvision (its wheels are built against one exact torch build each); this file was run once
with torchvision 0.29.1 and torch 2.14.1 (command and result in docs/features.md, section "Extracting").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meid_bench.extract.backbones import build_backbone
from meid_bench.extract.catalog import BACKBONES
from meid_bench.extract.preprocess import normalize, resize_crop

torchvision = pytest.importorskip("torchvision")


def _theirs(name: str):
    module = torchvision.models.video if BACKBONES[name].kind == "clip" else torchvision.models
    return getattr(module, name)(weights=None).eval()


def _enum(name: str):
    return torchvision.models.get_model_weights(name)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_same_state_dict_and_outputs_on_random_weights(name):
    theirs = _theirs(name)
    ours = build_backbone(name)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    generator = torch.Generator().manual_seed(0)
    state = {k: (v + 0.1 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v)
             for k, v in theirs.state_dict().items()}
    state = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in state.items()}
    theirs.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    shape = (2, 3, 8, 112, 112) if BACKBONES[name].kind == "clip" else (2, 3, 224, 224)
    x = torch.randn(shape, generator=generator)
    with torch.inference_mode():
        logits, features = theirs(x), ours(x)
        theirs.fc = torch.nn.Identity()
        assert torch.allclose(ours.classify(x), logits, rtol=1e-4, atol=1e-4)
        assert torch.allclose(features, theirs(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_weight_files_and_preprocessing_values_are_torchvisions(name):
    info = BACKBONES[name]
    enum = _enum(name)
    assert enum.DEFAULT.name == info.default
    for ours in info.weights:
        theirs = enum[ours.name]
        assert theirs.url == ours.url
        transform = theirs.transforms()
        pre = ours.preprocessing
        assert list(transform.resize_size) == list(pre.resize)
        assert list(transform.crop_size) in (list(pre.crop), [pre.crop[0]])
        assert tuple(transform.mean) == pre.mean and tuple(transform.std) == pre.std
        assert transform.interpolation.value == pre.interpolation
        assert getattr(transform, "antialias", False) == pre.antialias  # video transforms fix antialias=False
        if info.kind == "clip":
            assert f"frame_rate={info.clip_fps:g}" in theirs.meta["_docs"]
            assert f"clip_len={info.clip_len}" in theirs.meta["_docs"]


def _real_images() -> list[np.ndarray]:
    """Photographs shipped by scikit-learn and matplotlib, plus tall and odd-sized crops of them."""
    from sklearn.datasets import load_sample_images

    images = list(load_sample_images().images)
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
            from PIL import Image

            images.append(np.asarray(Image.open(handle).convert("RGB")))
    except (OSError, ValueError):
        pass
    images += [images[0][:, 100:333], images[1][7:300, 11:420], images[0][:97, :131]]
    return images


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_image_preprocessing_equals_the_weights_transforms(name):
    for weights in BACKBONES[name].weights:
        transform = _enum(name)[weights.name].transforms()
        for image in _real_images():
            frame = torch.from_numpy(np.array(image)).permute(2, 0, 1)
            expected = transform(frame)
            got = normalize(resize_crop(frame[None], weights.preprocessing), weights.preprocessing)[0]
            assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-6, rtol=0), name


@pytest.mark.parametrize("name", ["r2plus1d_18"])
def test_clip_preprocessing_equals_the_weights_transforms(name):
    weights = BACKBONES[name].default_weights
    transform = _enum(name)[weights.name].transforms()
    for image in _real_images():
        frames = np.stack([np.roll(image, shift, axis=1) for shift in range(0, 64, 4)])  # [T, H, W, C]
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, C, H, W]
        expected = transform(video)  # [C, T, h, w]
        got = normalize(resize_crop(video, weights.preprocessing), weights.preprocessing)
        assert torch.allclose(got.permute(1, 0, 2, 3), expected, atol=1e-6, rtol=0)
