"""MEID and the baselines on tiny sizes: shapes, gradient flow through every part and switch, frame selection,
fusion, label-routed distillation, the shared-work training step, the compute-matched attention model, the
training-step contract and the registry's errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meid_bench.errors import MeidBenchError
from meid_bench.registry import SplitStats
from meid_bench.models import (
    MEID,
    ModelOutput,
    compute_training_losses,
    compute_training_step,
    create_criterion,
    create_model,
    list_models,
    model_config_class,
)
from meid_bench.models.layers import pool
from meid_bench.models.meid import (
    MotionModule,
    windowed_differences,
    frames_to_keep,
    fuse_logits,
    lowest_attention_frames,
    random_frames,
)

D, C, T, H, B = 8, 5, 6, 16, 4
GROUPS = np.array(["head", "head", "medium", "tail", "tail"])
COUNTS = np.array([50, 40, 20, 5, 2])


class _Loss:
    name = "bce"
    options: dict = {}


@pytest.fixture
def criterion():
    return create_criterion(_Loss(), SplitStats.from_counts(COUNTS))


def make_batch(seed: int, batch: int = B, frames: int = T, mask: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = {
        "features": torch.randn(batch, frames, D, generator=generator),
        "target": (torch.rand(batch, C, generator=generator) > 0.5).float(),
    }
    if mask:
        out["mask"] = (torch.rand(batch, C, generator=generator) > 0.3).float()
    return out


# The first MEID's forms (difference motion, 50/50 probability fusion, label-routed MMD): the tests written for
# them build them explicitly; the current defaults are tested under their own names (SWITCHES and below).
FIRST_MEID = {"motion_form": "difference", "fusion": "mean_prob", "fusion_weight": 0.5, "distill_form": "mmd",
              "distill_weight": 0.1, "cfs_ratio": 0.75}
CURRENT = {"motion_form": "contrast", "fusion": "mean_prob", "fusion_weight": 0.7, "distill_form": "kl",
           "distill_weight": 0.03, "cfs_ratio": 0.5}


def make_meid(**options) -> MEID:
    torch.manual_seed(0)
    for key, value in FIRST_MEID.items():
        options.setdefault(key, value)
    options.setdefault("hidden", H)
    model = create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, **options)
    assert isinstance(model, MEID)
    return model


def two_streams(mask: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    return {"instance": make_batch(1, mask=mask), "balanced": make_batch(2, mask=mask)}


def assert_all_parameters_get_gradients(model: nn.Module, loss: torch.Tensor) -> None:
    model.zero_grad()
    loss.backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == [], f"parameters without gradient: {without}"


def test_registry_lists_the_four_models():
    assert list_models() == ["attention", "ensemble", "late_avg", "meid"]


@pytest.mark.parametrize("name", ["late_avg", "attention", "ensemble", "meid"])
def test_every_model_gives_logits_of_shape_b_by_c_in_train_and_eval(name, criterion):
    model = create_model(name, input_dim=D, num_classes=C, class_groups=GROUPS, hidden=H)
    batch = make_batch(0)
    for train in (True, False):
        model.train(train)
        labels = {"labels": batch["target"]} if train and model.needs_labels else {}
        out = model(batch["features"], **labels)
        assert isinstance(out, ModelOutput)
        assert out.logits.shape == (B, C)
        assert out.aux_loss.shape == ()
        assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", ["late_avg", "attention"])
def test_baselines_train_on_the_instance_stream_and_every_parameter_learns(name, criterion):
    torch.manual_seed(0)
    model = create_model(name, input_dim=D, num_classes=C, hidden=H)
    assert model.batch_streams == ("instance",) and not model.needs_balanced_batch
    losses = compute_training_losses(model, {"instance": make_batch(0)}, criterion)
    assert list(losses) == ["classification"]
    assert_all_parameters_get_gradients(model, sum(losses.values()))
    with pytest.raises(ValueError, match="instance stream only"):
        model(make_batch(0)["features"], balanced_features=make_batch(1)["features"])


def test_late_avg_equals_the_mean_of_per_frame_logits():
    model = create_model("late_avg", input_dim=D, num_classes=C).eval()
    features = make_batch(3)["features"]
    per_frame = model.classifier(model.embedding(features))  # [B, T, C]
    torch.testing.assert_close(model(features).logits, per_frame.mean(dim=1))
    assert model.hidden == D  # hidden: null is the reference Linear(D, D)


def test_attention_baseline_pools_with_weights_that_sum_to_one():
    model = create_model("attention", input_dim=D, num_classes=C, hidden=H).eval()
    out = model(make_batch(0)["features"])
    weights = out.extras["attention"]
    assert weights.shape == (B, T)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(B))


# -- MEID ------------------------------------------------------------------------------------------------------------

SWITCHES = [
    {},
    {"distill": False},
    {"expert2": False},
    {"frame_selection": "random"},
    {"motion": False},
    {"expert2_pooling": "attention"},
    {"expert2_pooling": "mean"},
    {"distill_form": "moments"},
    {"distill_routing": "label_blind"},
    {"expert2": False, "distill_form": "moments"},
    {"fusion": "mean_prob"},
    {"tail_groups": ["medium", "tail"]},
    CURRENT,
    {**CURRENT, "motion": False},
    {**CURRENT, "distill": False},
    {**CURRENT, "expert2_pooling": "attention"},
    {"motion_form": "contrast"},
    {"fusion": "gate_prob"},
    {"fusion": "stack_logit"},
    {"distill_form": "kl"},
    {"expert2": False, "fusion": "gate_prob"},
    {**CURRENT, "necks": False},
    {"necks": False, "cfs_ratio": 1.0, "motion": False, "expert2_pooling": "attention", "distill": False},
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "full")
def test_meid_gradients_reach_every_parameter_under_every_switch(switches, criterion):
    model = make_meid(**switches).train()
    streams = ("instance", "balanced") if switches.get("expert2", True) else ("instance",)
    assert model.batch_streams == streams
    losses = compute_training_losses(model, two_streams(mask=True), criterion)
    expected = ["expert1"] + (["distill"] if switches.get("distill", True) else [])
    expected += ["expert2"] if switches.get("expert2", True) else []
    expected += ["fusion"] if switches.get("expert2", True) and switches.get("fusion") in ("gate_prob", "stack_logit") \
        else []
    if switches.get("fusion") in ("gate_prob", "stack_logit"):
        assert 0.0 < switches.get("fusion_weight", 0.5) < 1.0
    assert list(losses) == expected
    assert all(value.shape == () and torch.isfinite(value) for value in losses.values())
    assert_all_parameters_get_gradients(model, sum(losses.values()))
    model.eval()
    assert model(make_batch(5)["features"]).logits.shape == (B, C)


def test_meid_builds_only_the_modules_its_switches_use():
    names = lambda m: {name.split(".")[0] for name, _ in m.named_parameters()}  # noqa: E731
    full = names(make_meid(expert2_pooling="attention"))
    assert {"embedding", "attention", "head_neck", "tail_neck", "head_classifier", "tail_classifier",
            "expert2_attention", "motion", "expert2_classifier"} == full
    assert names(make_meid(expert2=False)) == full - {"expert2_attention", "motion", "expert2_classifier"}
    assert names(make_meid(motion=False)) == full - {"motion", "expert2_attention"}
    assert names(make_meid(expert2_pooling="mean")) == full - {"expert2_attention"}
    assert names(make_meid()) == full - {"expert2_attention"}  # by default expert 2 pools with expert 1's weights
    assert names(make_meid(necks=False, distill_form="kl")) == full - {"expert2_attention", "head_neck", "tail_neck"}


def test_without_necks_expert1_is_one_linear_classifier_on_the_pooled_frames():
    model = make_meid(necks=False, distill_form="kl", dropout=0.0).eval()
    features = make_batch(0)["features"]
    out = model(features)
    pooled = pool(model.embedding(features), out.extras["attention"])
    logits = out.extras["expert1_logits"]
    torch.testing.assert_close(logits[:, :3], model.head_classifier(pooled))
    torch.testing.assert_close(logits[:, 3:], model.tail_classifier(pooled))
    with pytest.raises(MeidBenchError, match="necks are off"):
        make_meid(necks=False, distill_form="mmd")


def routed_streams() -> dict[str, dict[str, torch.Tensor]]:
    """Two streams whose labels give both distillation sides frames: head-only videos in the instance batch (classes
    0-2 are head-neck classes), tail videos (classes 3-4) in the balanced batch."""
    batches = two_streams()
    batches["instance"]["target"] = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [1, 0, 0, 1, 0], [0, 0, 1, 0, 0]])
    batches["balanced"]["target"] = torch.tensor([[0.0, 0, 0, 1, 0], [1, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 0, 0, 1, 1]])
    return batches


def distill_out(model: MEID, batches: dict, instance_labels=None, balanced_labels=None, seed: int = 0):
    torch.manual_seed(seed)  # the same frame draws for every call
    return model(batches["instance"]["features"], balanced_features=batches["balanced"]["features"],
                 labels=batches["instance"]["target"] if instance_labels is None else instance_labels,
                 balanced_labels=batches["balanced"]["target"] if balanced_labels is None else balanced_labels)


def test_distillation_loss_is_zero_when_off_and_in_eval_mode_and_positive_when_on():
    batches = routed_streams()
    assert make_meid(distill=False).train()(batches["instance"]["features"]).aux_loss.item() == 0.0
    on = make_meid(distill_weight=2.0).train()
    assert on.needs_labels and not make_meid(distill=False).needs_labels
    with pytest.raises(ValueError, match="needs labels"):
        on(batches["instance"]["features"], balanced_features=batches["balanced"]["features"])
    out = on(batches["instance"]["features"], balanced_features=batches["balanced"]["features"],
             labels=batches["instance"]["target"], balanced_labels=batches["balanced"]["target"])
    assert out.aux_loss.item() > 0.0 and out.aux_loss.requires_grad
    torch.testing.assert_close(out.aux_loss, 2.0 * out.extras["distill_distance"])
    assert on.eval()(batches["instance"]["features"]).aux_loss.item() == 0.0


def test_expert1_logits_come_from_the_head_and_tail_necks_in_class_order():
    model = make_meid(dropout=0.0).eval()
    features = make_batch(0)["features"]
    out = model(features)
    frames = model.embedding(features)
    weights = out.extras["attention"]
    head = model.head_classifier(pool(model.head_neck(frames), weights))
    tail = model.tail_classifier(pool(model.tail_neck(frames), weights))
    logits = out.extras["expert1_logits"]
    torch.testing.assert_close(logits[:, :3], head)  # classes 0-2: head and medium
    torch.testing.assert_close(logits[:, 3:], tail)  # classes 3-4: tail


def test_complementary_selection_keeps_exactly_the_lowest_attention_frames_in_time_order():
    weights = torch.tensor([[0.30, 0.05, 0.20, 0.01, 0.40, 0.04], [0.10, 0.11, 0.12, 0.13, 0.14, 0.40]])
    chosen = lowest_attention_frames(weights, 3)
    assert chosen.tolist() == [[1, 3, 5], [0, 1, 2]]


def test_meid_expert2_uses_the_lowest_attention_frames_of_expert1s_attention():
    model = make_meid(cfs_ratio=0.5, distill=False).train()
    out = model(make_batch(1)["features"], balanced_features=make_batch(2, frames=10)["features"])
    weights = out.extras["balanced_attention"]
    chosen = out.extras["balanced_selected_frames"]
    assert chosen.shape == (B, 5)
    for row in range(B):
        lowest = torch.argsort(weights[row])[:5].sort().values
        assert chosen[row].tolist() == lowest.tolist()
        kept = weights[row, chosen[row]]
        dropped = weights[row, [t for t in range(10) if t not in chosen[row].tolist()]]
        assert kept.max() < dropped.min()
    assert not weights.requires_grad  # inherited without autograd: selection is discrete


def test_expert2_sees_the_balanced_batch_and_does_not_train_expert1s_attention(criterion):
    model = make_meid(dropout=0.0, distill=False).train()
    batches = two_streams()
    out = model(batches["instance"]["features"], balanced_features=batches["balanced"]["features"])
    frames = model.embedding(batches["balanced"]["features"])
    expected, indices = model._expert2(frames, model.attention.weights(frames), batches["balanced"]["features"])
    torch.testing.assert_close(out.extras["balanced_logits"], expected)
    assert out.extras["balanced_logits"].shape == (B, C)
    # Changing the instance batch leaves expert 2's logits unchanged.
    other = model(make_batch(9)["features"], balanced_features=batches["balanced"]["features"])
    torch.testing.assert_close(other.extras["balanced_logits"], out.extras["balanced_logits"])
    # Expert 2's loss alone does not move expert 1's attention module (selection is discrete, computed without grad).
    model.zero_grad()
    criterion(out.extras["balanced_logits"], batches["balanced"]["target"]).backward()
    assert all(p.grad is None for p in model.attention.parameters())
    assert model.embedding.linear.weight.grad.abs().sum() > 0  # the embedding is shared


def test_random_selection_keeps_distinct_time_ordered_frames_and_differs_from_complementary():
    torch.manual_seed(0)
    chosen = random_frames(64, 10, 4, torch.device("cpu"))
    assert chosen.shape == (64, 4)
    assert (chosen[:, 1:] > chosen[:, :-1]).all()
    model = make_meid(frame_selection="random", cfs_ratio=0.5).eval()
    weights = torch.arange(10, dtype=torch.float32).repeat(64, 1)
    picks = model.select_frames(weights)
    assert not (picks == torch.arange(5)).all()  # complementary would always pick frames 0-4 here


def test_frames_to_keep_rounds_halves_up_and_stays_in_range():
    assert frames_to_keep(6, 0.5) == 3
    assert frames_to_keep(60, 0.25) == 15
    assert frames_to_keep(5, 0.5) == 3
    assert frames_to_keep(10, 0.01) == 1
    assert frames_to_keep(10, 1.0) == 10


def test_motion_module_adds_a_bottleneck_map_of_differences_between_consecutive_selected_frames():
    motion = MotionModule(2, 2)
    with torch.no_grad():
        for layer in (motion.down, motion.up):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    frames = torch.tensor([[[1.0, 5.0], [3.0, 4.0], [0.0, 6.0]]])
    # differences: (0, 0) for the first frame, then (2, -1), (-3, 2); the ReLUs keep the positive parts.
    expected = frames + torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]])
    torch.testing.assert_close(motion(frames), expected)
    assert make_meid().motion.down.out_features == H // 4


def test_motion_span_compares_the_means_of_windows_after_and_before_each_frame():
    frames = torch.randn(2, 9, 4)
    differences = windowed_differences(frames, 3)
    torch.testing.assert_close(differences[:, 0], torch.zeros(2, 4))
    torch.testing.assert_close(differences[:, 4], frames[:, 4:7].mean(1) - frames[:, 1:4].mean(1))
    torch.testing.assert_close(differences[:, 1], frames[:, 1:4].mean(1) - frames[:, 0])  # cut at the start
    torch.testing.assert_close(differences[:, 8], frames[:, 8] - frames[:, 5:8].mean(1))  # and at the end
    # A steady change adds up over the windows while the per-frame noise averages away.
    ramp = torch.linspace(0, 1, 9).view(1, 9, 1).expand(1, 9, 4)
    assert windowed_differences(ramp, 4)[0, 4, 0] == pytest.approx(4 * (ramp[0, 1, 0] - ramp[0, 0, 0]).item())
    one = MotionModule(4, 2, span=1)
    torch.testing.assert_close(windowed_differences(frames, 1), F.pad(frames[:, 1:] - frames[:, :-1], (0, 0, 1, 0)))
    assert make_meid(motion_span=3).motion.span == 3 and one.span == 1
    with pytest.raises(MeidBenchError, match="motion_span: must be a positive integer"):
        make_meid(motion_span=0)


def test_fusion_modes():
    a = torch.tensor([[0.0, 2.0, -40.0]])
    b = torch.tensor([[2.0, -2.0, 40.0]])
    torch.testing.assert_close(fuse_logits(a, b, "mean_logit", 0.25), 0.75 * a + 0.25 * b)
    assert fuse_logits(a, b, "expert1", 0.5) is a and fuse_logits(a, b, "expert2", 0.5) is b
    fused = fuse_logits(a, b, "mean_prob", 0.5)
    p = 0.5 * torch.sigmoid(a.double()) + 0.5 * torch.sigmoid(b.double())
    torch.testing.assert_close(fused[:, :2].double(), torch.log(p / (1 - p))[:, :2])
    assert torch.isfinite(fused).all()  # no saturation at large logits
    assert fused[0, 2].item() == pytest.approx(0.0, abs=1e-4)  # sigmoid(-40) + sigmoid(40) = 1 -> p = 0.5


def test_meid_inference_fuses_the_two_experts_on_the_same_videos():
    model = make_meid(fusion="mean_logit", fusion_weight=0.3).eval()
    out = model(make_batch(0)["features"])
    expected = 0.7 * out.extras["expert1_logits"] + 0.3 * out.extras["expert2_logits"]
    torch.testing.assert_close(out.logits, expected)
    no_expert2 = make_meid(expert2=False).eval()
    out = no_expert2(make_batch(0)["features"])
    torch.testing.assert_close(out.logits, out.extras["expert1_logits"])


def test_meid_state_dict_round_trip_gives_the_same_predictions():
    model = make_meid().eval()
    copy = make_meid()
    for p in copy.parameters():
        nn.init.zeros_(p)
    copy.load_state_dict(model.state_dict())
    features = make_batch(0)["features"]
    torch.testing.assert_close(copy.eval()(features).logits, model(features).logits)


def test_training_step_contract_through_a_wrapper_like_distributed_data_parallel(criterion):
    class Wrapper(nn.Module):  # stands in for DistributedDataParallel: forward delegates, `.module` is the model
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module
            self.calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            return self.module(*args, **kwargs)

    wrapped = Wrapper(make_meid())
    losses = compute_training_losses(wrapped, two_streams(), criterion)
    assert wrapped.calls == 1 and set(losses) == {"expert1", "distill", "expert2"}
    assert wrapped.module.training_losses(two_streams(), criterion).keys() == losses.keys()


def test_training_step_needs_every_declared_stream(criterion):
    with pytest.raises(ValueError, match="balanced"):
        compute_training_losses(make_meid(), {"instance": make_batch(0)}, criterion)
    with pytest.raises(ValueError, match="balanced_features"):
        make_meid(distill=False).losses_from_output(make_meid(distill=False)(make_batch(0)["features"]),
                                                    two_streams(), criterion)


def test_label_mask_reaches_the_criterion(criterion):
    model = make_meid(expert2=False, distill=False, dropout=0.0)
    batch = make_batch(0)
    zero_mask = dict(batch, mask=torch.zeros(B, C))
    losses = compute_training_losses(model, {"instance": zero_mask}, criterion)
    assert losses["expert1"].item() == 0.0


def test_create_model_rejects_unknown_names_options_and_wrong_types():
    with pytest.raises(MeidBenchError, match="unknown model 'meed'"):
        create_model("meed", input_dim=D, num_classes=C)
    with pytest.raises(MeidBenchError, match="cfs_ration: unknown key"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, cfs_ration=0.5)
    with pytest.raises(MeidBenchError, match="distill: expected true or false"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, distill="yes")
    with pytest.raises(MeidBenchError, match="cfs_ratio: must be in"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, cfs_ratio=0.0)
    with pytest.raises(MeidBenchError, match="fusion: is 'expert2' but expert2 is off"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, expert2=False, fusion="expert2",
                     distill_form="mmd")
    with pytest.raises(MeidBenchError, match="distill_form: is 'kl' .* but expert2 is off"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, expert2=False, distill_form="kl")
    with pytest.raises(MeidBenchError, match="distill_temperature: must be > 0"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, distill_temperature=0.0)
    with pytest.raises(MeidBenchError, match="fusion_weight: must be in \\(0, 1\\) for the learned fusion"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, fusion="gate_prob", fusion_weight=1.0)
    with pytest.raises(MeidBenchError, match="tail_groups"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, tail_groups=["rare"])


def test_meid_needs_class_groups_with_both_neck_sides():
    with pytest.raises(ValueError, match="class_groups"):
        create_model("meid", input_dim=D, num_classes=C)
    with pytest.raises(ValueError, match="at least one head-neck and one tail-neck class"):
        create_model("meid", input_dim=D, num_classes=C, class_groups=["head"] * C)
    config = model_config_class("meid")(hidden=H)
    model = create_model("meid", input_dim=D, num_classes=C, class_groups=GROUPS, config=config)
    assert model.tail_class_mask.tolist() == [False, False, False, True, True]


def test_meid_works_with_many_frames_and_a_single_kept_frame(criterion):
    model = make_meid(cfs_ratio=0.01, distill=False).train()
    batches = {"instance": make_batch(1, frames=3), "balanced": make_batch(2, frames=3)}
    out = model(batches["instance"]["features"], balanced_features=batches["balanced"]["features"])
    assert out.extras["balanced_selected_frames"].shape == (B, 1)
    assert all(math.isfinite(v.item()) for v in compute_training_losses(model, batches, criterion).values())


def test_shared_work_training_step_equals_embedding_the_selected_frames_again(criterion):
    # MEID embeds the balanced batch once (before dropout) for expert 1's attention, expert 2's frames and the
    # distillation's student. The naive step embeds it for the attention (no grad) and the selected frames again:
    # the same maths, so the same losses and gradients (dropout off: its masks are random).
    model = make_meid(dropout=0.0, distill=False).train()
    batches = two_streams(mask=True)
    losses = compute_training_losses(model, batches, criterion)
    model.zero_grad()
    sum(losses.values()).backward()
    shared_grads = {name: p.grad.clone() for name, p in model.named_parameters()}

    instance, balanced = batches["instance"], batches["balanced"]
    frames = model.embedding(instance["features"])
    naive = {"expert1": criterion(model._expert1(frames, model.attention.weights(frames)), instance["target"],
                                  instance["mask"])}
    with torch.no_grad():
        inherited = model.attention.weights(model.embedding(balanced["features"]))
    indices = model.select_frames(inherited)
    chosen = balanced["features"].gather(1, indices.unsqueeze(-1).expand(-1, -1, D))
    logits = model._expert2_head(model.embedding(chosen), inherited, indices, chosen)
    naive["expert2"] = criterion(logits, balanced["target"], balanced["mask"])
    model.zero_grad()
    sum(naive.values()).backward()
    for name in losses:
        torch.testing.assert_close(losses[name], naive[name], rtol=0, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(shared_grads[name], p.grad, rtol=1e-5, atol=1e-6)


def test_compute_matched_attention_trains_one_network_on_both_streams(criterion):
    torch.manual_seed(0)
    model = create_model("attention", input_dim=D, num_classes=C, hidden=H, balanced_stream=True, dropout=0.0)
    assert model.batch_streams == ("instance", "balanced") and model.needs_balanced_batch
    batches = two_streams(mask=True)
    losses = compute_training_losses(model, batches, criterion)
    assert list(losses) == ["classification", "balanced"]
    # One pass over both batches gives what two separate passes give.
    alone = model(batches["balanced"]["features"]).logits
    expected = criterion(alone, batches["balanced"]["target"], batches["balanced"]["mask"])
    torch.testing.assert_close(losses["balanced"], expected)
    assert_all_parameters_get_gradients(model, sum(losses.values()))
    model.eval()
    assert model(make_batch(3)["features"]).logits.shape == (B, C)  # inference: one batch, as every model
    single = create_model("attention", input_dim=D, num_classes=C, hidden=H)
    with pytest.raises(ValueError, match="instance stream only"):
        single(batches["instance"]["features"], balanced_features=batches["balanced"]["features"])


def test_ensemble_trains_two_independent_experts_one_per_stream_and_fuses_them_as_meid(criterion):
    torch.manual_seed(0)
    model = create_model("ensemble", input_dim=D, num_classes=C, hidden=H, dropout=0.0)
    assert model.batch_streams == ("instance", "balanced")
    batches = two_streams(mask=True)
    losses = compute_training_losses(model, batches, criterion)
    assert list(losses) == ["expert1", "expert2"]
    torch.testing.assert_close(losses["expert1"], criterion(model.expert1(batches["instance"]["features"]).logits,
                                                            batches["instance"]["target"], batches["instance"]["mask"]))
    torch.testing.assert_close(losses["expert2"], criterion(model.expert2(batches["balanced"]["features"]).logits,
                                                            batches["balanced"]["target"], batches["balanced"]["mask"]))
    # Each expert learns from its own stream only: nothing is shared.
    model.zero_grad()
    losses["expert1"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.expert2.parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.expert1.parameters())
    assert_all_parameters_get_gradients(model, losses["expert1"] + losses["expert2"])
    model.eval()
    features = make_batch(3)["features"]
    out = model(features)
    expected = fuse_logits(model.expert1(features).logits, model.expert2(features).logits, "mean_prob", 0.7)
    torch.testing.assert_close(out.logits, expected)
    alone = create_model("ensemble", input_dim=D, num_classes=C, hidden=H, fusion="expert1")
    alone.load_state_dict(model.state_dict())
    torch.testing.assert_close(alone.eval()(features).logits, model.expert1(features).logits)
    with pytest.raises(MeidBenchError, match="fusion_weight"):
        create_model("ensemble", input_dim=D, num_classes=C, fusion_weight=1.5)


def test_training_step_passes_frame_labels_where_the_batch_has_them(criterion):
    seen = {}

    class Spy(MEID):
        def forward(self, features, balanced_features=None, labels=None, balanced_labels=None):
            seen.update(labels=labels, balanced_labels=balanced_labels)
            return super().forward(features, balanced_features, labels, balanced_labels)

    torch.manual_seed(0)
    model = Spy(D, C, model_config_class("meid")(hidden=H, **FIRST_MEID), GROUPS == "tail")
    batches = two_streams()
    batches["balanced"]["frame_labels"] = batches["balanced"]["target"].unsqueeze(1).repeat(1, T, 1)
    step = compute_training_step(model, batches, criterion)
    assert seen["labels"] is batches["instance"]["target"]  # no frame labels: the video's
    assert seen["balanced_labels"] is batches["balanced"]["frame_labels"]
    assert set(step.logged) == {"distill_distance"} and not step.logged["distill_distance"].requires_grad
