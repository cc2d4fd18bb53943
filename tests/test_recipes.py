"""Recipes: every shipped file loads, builds its model, criterion and batch mixing, and trains one tiny step; the
reference defaults are what the field uses; bad keys and types are clear errors naming the file and key path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from meid_bench.errors import MeidBenchError
from meid_bench.models import compute_training_losses
from meid_bench.registry import SplitStats
from meid_bench.train.config import Recipe, apply_overrides, list_recipes, load_recipe, recipes_dir

D, C, T, B = 8, 5, 6, 4
GROUPS = np.array(["head", "head", "medium", "tail", "tail"])
COUNTS = np.array([500, 300, 120, 40, 5])
EXPECTED = {
    "meid", "meid_kl_distill", "meid_no_expert2", "meid_random_frames", "meid_no_motion", "late_avg", "attention",
    "cbs", "srs", "mixup", "framestack", "focal", "cb", "ldam_drw", "eql", "eql_videolt", "attention_cm",
    "meid_label_blind_distill", "meid_difference_motion", "meid_mean_fusion", "meid_mmd_distill", "meid_first",
    "logit_adjusted", "distribution_balanced", "asymmetric", "ensemble_cm", "meid_no_parts",
    "attention_logit_adjusted", "attention_distribution_balanced", "attention_asymmetric", "crt", "attention_crt",
}


def batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "features": torch.randn(B, T, D, generator=generator),
        "target": (torch.rand(B, C, generator=generator) > 0.5).float(),
        "mask": torch.ones(B, C),
    }


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_recipes_dir_is_the_repository_folder_and_holds_one_recipe_per_method():
    assert recipes_dir() == Path(__file__).resolve().parents[1] / "recipes"
    assert set(list_recipes()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_builds_and_trains_one_tiny_step(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    # Tiny width for speed; everything else exactly as shipped.
    tiny_params = dataclasses.replace(recipe.model.params, hidden=16, hidden_ratio=1.0)
    tiny = dataclasses.replace(recipe.model, options=tiny_params)
    torch.manual_seed(0)
    model = tiny.create(D, C, GROUPS)
    stats = SplitStats.from_counts(COUNTS, num_videos=int(COUNTS.max()) * 4, class_groups=GROUPS)
    criterion = recipe.resolved().loss.create(stats)
    mix = recipe.batch_mix.create(stats, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.optim.lr)
    batches = {"instance": batch(1), "balanced": batch(2)}
    if mix is not None:
        features, target, mask = mix(batches["instance"]["features"], batches["instance"]["target"],
                                     batches["instance"]["mask"])
        batches["instance"] = {"features": features, "target": target, "mask": mask}
    criterion.set_epoch(0)
    before = [p.detach().clone() for p in model.parameters()]
    losses = compute_training_losses(model, batches, criterion)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.optim.clip_grad_norm)
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    assert model(batch(3)["features"]).logits.shape == (B, C)


def meid_balanced_sampler():
    return load_recipe("meid").balanced_sampler


def test_reference_defaults():
    base = load_recipe("late_avg")
    assert base.model.name == "late_avg" and base.model.hidden is None and base.model.dropout == 0.5
    assert base.model.params.hidden_ratio == 1.0 and base.model.create(D, C).hidden == D  # the reference Linear(D, D)
    # MEID and attention share late_avg's width H = D, so the three compare at equal capacity (docs/models.md).
    assert load_recipe("meid").model.create(D, C, GROUPS).hidden == D
    assert load_recipe("attention").model.create(D, C).hidden == D
    assert (base.optim.name, base.optim.lr, base.optim.milestones, base.optim.gamma) == ("adam", 1e-4, (30, 60), 0.1)
    assert base.optim.clip_grad_norm == 20.0 and base.epochs == 100 and base.batch_size == 128
    assert (base.data.train_frames, base.data.eval_frames, base.data.train_frame_sampling) == (60, 150, "random")
    assert base.loss.name == "bce" and base.sampler.name == "instance" and base.batch_mix.name == "none"
    assert load_recipe("cb").loss.options.beta == 0.9999
    ldam = load_recipe("ldam_drw").loss.options
    assert (ldam.max_margin, ldam.scale, ldam.drw_epoch) == (0.5, 30.0, None)
    # Deferred re-weighting starts at the first lr decay of whatever schedule the recipe is trained with.
    assert load_recipe("ldam_drw").resolved().loss.options.drw_epoch == 30
    on_charades = load_recipe("ldam_drw").for_benchmark("charadeslt").resolved()
    assert on_charades.loss.options.drw_epoch == on_charades.optim.milestones[0]
    eql = load_recipe("eql_videolt").loss.options
    assert (eql.drop_prob, eql.tail_threshold) == (1.76e-3, 100)
    assert load_recipe("eql").loss.name == "eql"
    framestack = load_recipe("framestack")
    assert framestack.loss.name == "focal" and framestack.loss.options.gamma == 1.0
    assert framestack.batch_mix.options.mix_fraction == 0.5 and framestack.batch_mix.options.video_ap == "positives"
    control = load_recipe("attention_cm")
    assert control.model.params.balanced_stream and control.balanced_sampler == meid_balanced_sampler()
    assert load_recipe("mixup").batch_mix.options.alpha == 1.0
    for name in ("cbs", "srs"):
        sampler = load_recipe(name).sampler
        assert sampler.name == name and sampler.label_mask
    meid = load_recipe("meid")
    assert meid.balanced_sampler.name == "cbs" and meid.sampler.name == "instance"


@pytest.mark.parametrize("ablation, switch", [
    ("meid_no_expert2", {"expert2": False}),
    ("meid_random_frames", {"frame_selection": "random"}),
    ("meid_no_motion", {"motion": False}),
    ("meid_label_blind_distill", {"distill": True, "distill_routing": "label_blind", "distill_form": "mmd",
                                  "distill_weight": 0.1}),
    ("meid_difference_motion", {"motion_form": "difference"}),
    ("meid_mean_fusion", {"fusion_weight": 0.5}),
    ("meid_kl_distill", {"distill": True}),
    ("meid_mmd_distill", {"distill": True, "distill_form": "mmd", "distill_weight": 0.1}),
    ("meid_first", {"motion_form": "difference", "fusion_weight": 0.5, "cfs_ratio": 0.75, "distill": True,
                    "distill_form": "mmd", "distill_weight": 0.1}),
])
def test_meid_ablations_differ_from_meid_only_in_their_switch(ablation, switch):
    full = load_recipe("meid").to_dict()
    changed = load_recipe(ablation).to_dict()
    for key in ("name", "description"):
        full.pop(key), changed.pop(key)
    assert {k: v for k, v in changed["model"].items() if full["model"][k] != v} == switch
    changed["model"] = full["model"]
    assert changed == full


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_to_dict_from_dict_round_trip_through_json_and_yaml(name):
    recipe = load_recipe(name)
    as_json = json.loads(json.dumps(recipe.to_dict()))
    assert Recipe.from_dict(as_json, "checkpoint") == recipe
    assert Recipe.from_dict(yaml.safe_load(yaml.safe_dump(recipe.to_dict())), "dump") == recipe


def test_a_minimal_recipe_takes_every_default_and_its_name_from_the_file(tmp_path):
    path = write(tmp_path, "model: {name: meid}\n", "mine.yaml")
    recipe = load_recipe(path)
    assert recipe.name == "mine"
    assert recipe.model.params.cfs_ratio == 0.5 and recipe.optim.lr == 1e-4 and recipe.eval_every == 1
    assert load_recipe(str(path)) == recipe


def test_scientific_floats_without_a_dot_are_numbers(tmp_path):
    recipe = load_recipe(write(tmp_path, "model: {name: late_avg}\noptim: {lr: 3e-4, weight_decay: 1e-5}\n"))
    assert recipe.optim.lr == 3e-4 and recipe.optim.weight_decay == 1e-5


@pytest.mark.parametrize("text, message", [
    ("model: {name: meid}\nepoch: 3\n", r"r.yaml: epoch: unknown key; known keys here: .*epochs"),
    ("model: {name: meid, cfs_ration: 0.3}\n", r"r.yaml: model.cfs_ration: unknown key; known keys here: .*cfs_ratio"),
    ("model: {name: late_avg, cfs_ratio: 0.3}\n", r"model.cfs_ratio: unknown key"),
    ("model: {name: meid}\noptim: {learning_rate: 0.1}\n", r"optim.learning_rate: unknown key"),
    ("model: {name: meid}\nloss: {name: focal, beta: 0.9}\n", r"loss.beta: unknown key"),
    ("model: {name: meid}\nbatch_mix: {name: mixup, mix_fraction: 0.5}\n", r"batch_mix.mix_fraction: unknown key"),
    ("model: {name: meid}\ndata: {train_frames: 60, frames: 3}\n", r"data.frames: unknown key"),
    ("model: {name: meed}\n", r"model.name: unknown model 'meed'; one of attention, ensemble, late_avg, meid"),
    ("model: {name: meid}\nloss: {name: ldam}\n", r"loss.name: unknown loss 'ldam'"),
    ("model: {hidden: 3}\n", r"model.name: missing required key"),
    ("description: no model\n", r"model: missing required key"),
    ("model: {name: late_avg}\ninit: {from_rn: x}\n", r"init.from_rn: unknown key; known keys here: from_run"),
    ("model: {name: late_avg}\ninit: {from_run: x, reset: true}\n", r"init.reset: .*names none"),
])
def test_unknown_keys_and_names_are_errors_naming_the_file_and_key_path(tmp_path, text, message):
    with pytest.raises(MeidBenchError, match=message):
        load_recipe(write(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ("model: {name: meid}\noptim: {lr: fast}\n", r"optim.lr: expected a finite number, got str 'fast'"),
    ("model: {name: meid}\nepochs: 1.5\n", r"epochs: expected an integer, got float 1.5"),
    ("model: {name: meid}\nbatch_size: true\n", r"batch_size: expected an integer, got bool True"),
    ("model: {name: meid, distill: 'yes'}\n", r"model.distill: expected true or false, got str 'yes'"),
    ("model: {name: meid, hidden: 1.0}\n", r"model.hidden: expected an integer or null"),
    ("model: {name: meid, frame_selection: lowest}\n",
     r"model.frame_selection: expected one of 'complementary', 'random'"),
    ("model: {name: meid}\noptim: {milestones: [30, x]}\n", r"optim.milestones\[1\]: expected an integer, got str 'x'"),
    ("model: {name: meid}\noptim: {milestones: 30}\n", r"optim.milestones: expected a list"),
    ("model: {name: meid}\nsampler: cbs\n", r"sampler: expected a mapping"),
    ("model: {name: meid}\nsampler: {name: cbs, label_mask: 1}\n", r"sampler.label_mask: expected true or false"),
    ("model: {name: meid}\nname: 7\n", r"name: expected a non-empty string"),
    ("- model\n", r"expected a mapping of recipe keys"),
])
def test_wrong_types_are_errors_naming_the_file_and_key_path(tmp_path, text, message):
    with pytest.raises(MeidBenchError, match=message) as info:
        load_recipe(write(tmp_path, text))
    assert str(info.value).startswith(str(tmp_path / "r.yaml"))


@pytest.mark.parametrize("text, message", [
    ("model: {name: meid, cfs_ratio: 0}\n", r"model.cfs_ratio: must be in \(0, 1\]"),
    ("model: {name: meid}\nsampler: {name: instance, label_mask: true}\n", r"sampler.label_mask: applies to cbs/srs"),
    ("model: {name: meid}\noptim: {milestones: [60, 30]}\n", r"optim.milestones: must be strictly increasing"),
    ("model: {name: meid}\nepochs: 0\n", r"epochs: must be >= 1"),
    ("model: {name: meid, dropout: 1.0}\n", r"model.dropout: must be in \[0, 1\)"),
    ("model: {name: meid, hidden: 64, hidden_ratio: 0.5}\n", r"model.hidden_ratio: applies only when hidden is null"),
])
def test_out_of_range_values_are_errors(tmp_path, text, message):
    with pytest.raises(MeidBenchError, match=message):
        load_recipe(write(tmp_path, text))


def test_yaml_problems_are_errors_with_the_line(tmp_path):
    with pytest.raises(MeidBenchError, match=r"r.yaml: line 2: .*invalid YAML"):
        load_recipe(write(tmp_path, "model: {name: meid}\nepochs: a: b\n"))
    with pytest.raises(MeidBenchError, match=r"r.yaml: line 3: epochs: duplicate key"):
        load_recipe(write(tmp_path, "model: {name: meid}\nepochs: 3\nepochs: 4\n"))


def test_unknown_recipe_names_and_missing_files(tmp_path):
    with pytest.raises(MeidBenchError, match=r"--recipe meed: unknown recipe name; available: .*meid"):
        load_recipe("meed")
    with pytest.raises(MeidBenchError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_from_dict_names_its_source():
    with pytest.raises(MeidBenchError, match=r"^checkpoint run-3: model.distill: expected true or false"):
        Recipe.from_dict({"name": "x", "model": {"name": "meid", "distill": 0}}, "checkpoint run-3")


def test_schedules_per_benchmark_replace_the_reference_schedule_and_overrides_come_after(tmp_path):
    path = write(tmp_path, "model: {name: late_avg}\nschedules:\n  charadeslt: {epochs: 20, lr: 3.0e-3, "
                           "milestones: [15, 18]}\n")
    recipe = load_recipe(path)
    on_charades = recipe.for_benchmark("charadeslt")
    assert (on_charades.epochs, on_charades.optim.lr, on_charades.optim.milestones) == (20, 3e-3, (15, 18))
    assert on_charades.schedule_from == "charadeslt" and on_charades.schedules == {}
    assert on_charades.optim.gamma == recipe.optim.gamma  # the rest of optim is the recipe's
    on_videolt = recipe.for_benchmark("videolt")
    assert (on_videolt.epochs, on_videolt.optim.lr, on_videolt.schedule_from) == (100, 1e-4, "recipe")
    assert on_charades.for_benchmark("videolt") == on_charades  # resolved once, then fixed
    # What run.json and checkpoints record round-trips, and --set applies on top of the benchmark's schedule.
    assert Recipe.from_dict(json.loads(json.dumps(on_charades.to_dict())), "run.json") == on_charades
    assert apply_overrides(on_charades, ["optim.lr=1e-2"]).optim.lr == 1e-2


def test_every_shipped_recipe_has_a_charadeslt_schedule_and_videolt_keeps_the_reference():
    for name in sorted(EXPECTED):
        recipe = load_recipe(name)
        assert "charadeslt" in recipe.schedules, name
        assert recipe.for_benchmark("videolt").optim.lr == 1e-4 and recipe.for_benchmark("videolt").epochs == 100


@pytest.mark.parametrize("text, message", [
    ("schedules: {charadelst: {epochs: 2, lr: 0.1, milestones: [1]}}\n", r"schedules.charadelst: unknown benchmark"),
    ("schedules: {charadeslt: {epochs: 2, lr: 0.1, milestones: [1], gamma: 0.5}}\n",
     r"schedules.charadeslt.gamma: unknown key"),
    ("schedules: {charadeslt: {epochs: 2, lr: 0.1}}\n", r"schedules.charadeslt.milestones: missing required key"),
    ("schedules: {charadeslt: {epochs: 20, lr: 0.1, milestones: [10, 20]}}\n",
     r"schedules.charadeslt.milestones: must be before the last epoch"),
    ("schedules: {charadeslt: {epochs: 20, lr: -1, milestones: [10]}}\n", r"schedules.charadeslt.lr: must be > 0"),
    ("schedules: [charadeslt]\n", r"schedules: expected a mapping"),
])
def test_bad_schedules_name_the_key(tmp_path, text, message):
    with pytest.raises(MeidBenchError, match=message):
        load_recipe(write(tmp_path, "model: {name: late_avg}\n" + text))


def test_deferred_reweighting_without_milestones_is_an_error(tmp_path):
    recipe = load_recipe(write(tmp_path, "model: {name: late_avg}\nloss: {name: ldam_drw}\noptim: {milestones: []}\n"))
    with pytest.raises(MeidBenchError, match="drw_epoch: null means the first lr decay"):
        recipe.resolved()
