"""MEID's order-aware motion (the late-minus-early contrast), its learned fusion and its prediction-level
distillation (kl): what each computes, where its gradient goes, and that the first MEID's forms stay available."""

from __future__ import annotations

import torch

from meid_bench.models.base import compute_training_losses
from meid_bench.models.fusion import LearnedFusion, fuse_logits
from meid_bench.models.motion import distinct_frames, half_contrast
from test_models import CURRENT, B, C, criterion, make_batch, make_meid, two_streams  # noqa: F401 (fixture)


def test_half_contrast_is_late_mean_minus_early_mean_and_flips_sign_when_time_reverses():
    frames = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1) * torch.tensor([1.0, -2.0])
    everything = torch.ones(1, 6, dtype=torch.bool)
    contrast = half_contrast(frames, everything)
    torch.testing.assert_close(contrast, torch.tensor([[3.0, -6.0]]))  # mean(3, 4, 5) - mean(0, 1, 2)
    torch.testing.assert_close(half_contrast(frames.flip(1), everything), -contrast)
    # An odd count leaves the middle frame out; fewer than two frames give zero.
    odd = half_contrast(frames[:, :5], torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(odd, torch.tensor([[3.0, -6.0]]))  # mean(3, 4) - mean(0, 1)
    torch.testing.assert_close(half_contrast(frames[:, :1], everything[:, :1]), torch.zeros(1, 2))


def test_repeated_frames_count_once():
    features = torch.tensor([[[1.0], [1.0], [1.0], [2.0], [3.0], [4.0]]])
    distinct = distinct_frames(features)
    assert distinct.tolist() == [[True, False, False, True, True, True]]
    # Distinct frames 1, 2, 3, 4: late (3, 4) minus early (1, 2) = 2, whatever the repeats of frame 1.
    torch.testing.assert_close(half_contrast(features, distinct), torch.tensor([[2.0]]))
    torch.testing.assert_close(half_contrast(features, torch.ones(1, 6, dtype=torch.bool)),
                               torch.tensor([[(2.0 + 3 + 4) / 3 - 1.0]]))


def test_the_contrast_makes_expert2_see_order_and_the_other_forms_do_not():
    features = make_batch(3)["features"]
    reversed_features = features.flip(1)
    for options, sees_order in (({"motion_form": "contrast"}, True), ({"motion": False}, False)):
        model = make_meid(frame_selection="complementary", **options).eval()
        forwards = model(features).extras["expert2_logits"]
        backwards = model(reversed_features).extras["expert2_logits"]
        # Attention is per frame, so the reversed video keeps the same frames with the same weights.
        assert (not torch.allclose(forwards, backwards, atol=1e-5)) == sees_order, options


def test_the_contrast_forms_classifier_reads_the_pooled_frames_and_the_contrast():
    model = make_meid(motion_form="contrast", dropout=0.5).train()
    batches = two_streams()
    out = model(batches["instance"]["features"], balanced_features=batches["balanced"]["features"],
                labels=batches["instance"]["target"], balanced_labels=batches["balanced"]["target"])
    assert out.extras["balanced_logits"].shape == (B, C)
    assert model.expert2_classifier.linear.in_features == 2 * model.hidden


def test_learned_fusions_start_at_the_fixed_average_and_learn_only_their_own_weights(criterion):
    expert1, expert2 = torch.randn(4, C) * 3, torch.randn(4, C) * 3
    gate = LearnedFusion("gate_prob", C, 0.5)
    torch.testing.assert_close(gate(expert1, expert2), fuse_logits(expert1, expert2, "mean_prob", 0.5))
    stack = LearnedFusion("stack_logit", C, 0.3)
    torch.testing.assert_close(stack(expert1, expert2), fuse_logits(expert1, expert2, "mean_logit", 0.3))
    torch.testing.assert_close(gate.expert2_share(), torch.full((C,), 0.5))

    model = make_meid(fusion="gate_prob").train()
    losses = compute_training_losses(model, two_streams(mask=True), criterion)
    model.zero_grad()
    losses["fusion"].backward()
    moved = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == {"fusion.gate"}
    model.eval()
    out = model(make_batch(4)["features"])
    torch.testing.assert_close(out.logits, model.fusion(out.extras["expert1_logits"], out.extras["expert2_logits"]))


def test_kl_distillation_teaches_expert2_from_expert1s_head_neck_on_the_balanced_videos(criterion):
    model = make_meid(distill_form="kl", distill_weight=0.5, distill_temperature=2.0, dropout=0.0).train()
    assert not model.needs_labels  # the kl form needs no labels: both sides are predictions on the same videos
    batches = two_streams()
    out = model(batches["instance"]["features"], balanced_features=batches["balanced"]["features"])
    with torch.no_grad():
        hidden = model.embedding.activations(batches["balanced"]["features"])
        teacher = model._expert1(hidden, model.attention.weights(hidden))
    head = ~model.tail_class_mask
    t, s = teacher[:, head] / 2.0, out.extras["balanced_logits"][:, head] / 2.0
    p, q = torch.sigmoid(t), torch.sigmoid(s)
    expected = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).mean() * 4.0
    torch.testing.assert_close(out.extras["distill_distance"], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.aux_loss, 0.5 * expected.detach(), rtol=1e-4, atol=1e-6)
    # Its gradient moves expert 2 and the shared embedding, never expert 1 (the teacher).
    model.zero_grad()
    out.aux_loss.backward()
    moved = {name.split(".")[0] for name, p in model.named_parameters()
             if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == {"embedding", "motion", "expert2_classifier"}
    assert model.eval()(batches["instance"]["features"]).aux_loss.item() == 0.0


def test_current_defaults_are_the_order_aware_model_the_validation_sweep_chose():
    from meid_bench.models import model_config_class

    defaults = model_config_class("meid")()
    assert {key: getattr(defaults, key) for key in CURRENT} == CURRENT
    model = make_meid(**CURRENT)
    assert not hasattr(model, "motion") and not hasattr(model, "fusion")
    assert hasattr(make_meid(), "motion") and hasattr(make_meid(fusion="gate_prob"), "fusion")
