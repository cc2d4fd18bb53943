"""One way to register a component (models, losses, batch mixes, samplers) and recipes that inherit from a base."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from meid_bench.cli import main
from meid_bench.data.samplers import SAMPLERS
from meid_bench.errors import MeidBenchError
from meid_bench.models.batch_mix import BATCH_MIXES
from meid_bench.models.losses import LOSSES, MultiLabelLoss, create_criterion
from meid_bench.models.registry import MODELS
from meid_bench.registry import Registry, SplitStats
from meid_bench.train.config import apply_overrides, list_recipes, load_recipe, recipes_dir
from meid_bench.train.loop import TrainOptions, train
from test_train import TINY, tiny_split  # noqa: F401  (the module-scoped split fixture)


@dataclass(frozen=True)
class ScaledOptions:
    scale: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        return [("scale", f"must be > 0, got {self.scale}")] if self.scale <= 0 else []


class ScaledBCELoss(MultiLabelLoss):
    """A throwaway loss: BCE times a constant; it counts its calls and keeps the statistics it was built with."""

    calls = 0

    def __init__(self, scale: float, stats: SplitStats) -> None:
        super().__init__()
        self.scale, self.stats = scale, stats

    @classmethod
    def from_options(cls, options: ScaledOptions, stats: SplitStats) -> "ScaledBCELoss":
        return cls(options.scale, stats)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return self.scale * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


@pytest.fixture
def scratch_losses(monkeypatch):
    """The loss registry, restored after the test (a throwaway registration must not leak into other tests)."""
    monkeypatch.setattr(LOSSES, "_entries", dict(LOSSES._entries))
    return LOSSES


def test_a_loss_registered_alone_trains_from_a_recipe(scratch_losses, tiny_split, tmp_path):
    # The registration is the only code: no factory branch, no option table, no loop change.
    scratch_losses.register("scaled_bce", ScaledOptions)(ScaledBCELoss)
    recipe = tmp_path / "scaled.yaml"
    recipe.write_text("base: late_avg\ndescription: late averaging with a scaled BCE\n"
                      "loss: {name: scaled_bce, scale: 2.0}\n")
    ScaledBCELoss.calls = 0
    run = train(TrainOptions(split=tiny_split, recipe=str(recipe), out=tmp_path / "run", epochs=1, device="cpu",
                             overrides=TINY + ("model.hidden=8",)), echo=lambda _: None)
    assert ScaledBCELoss.calls > 0
    recorded = json.loads((run / "run.json").read_text())["recipe"]
    assert recorded["loss"] == {"name": "scaled_bce", "scale": 2.0} and recorded["model"]["name"] == "late_avg"
    # Its options are checked like any other component's.
    recipe.write_text("base: late_avg\ndescription: x\nloss: {name: scaled_bce, scale: -1.0}\n")
    with pytest.raises(MeidBenchError, match="loss.scale: must be > 0"):
        load_recipe(recipe)


def test_the_factory_receives_the_split_statistics(scratch_losses):
    scratch_losses.register("scaled_bce", ScaledOptions)(ScaledBCELoss)
    stats = SplitStats.from_counts([50, 5, 1], num_videos=60, class_groups=["head", "medium", "tail"])

    class Config:
        name, options = "scaled_bce", {"scale": 3.0}

    loss = create_criterion(Config(), stats)
    assert loss.scale == 3.0 and loss.stats is stats and list(loss.stats.class_groups) == ["head", "medium", "tail"]


@pytest.mark.parametrize("registry", [MODELS, LOSSES, BATCH_MIXES, SAMPLERS], ids=lambda r: r.kind)
def test_an_unregistered_name_lists_the_known_ones(registry):
    with pytest.raises(MeidBenchError) as caught:
        registry.entry("no_such_component", "recipe.yaml")
    message = str(caught.value)
    assert f"unknown {registry.kind} 'no_such_component'" in message
    assert all(name in message for name in registry.names())


def test_an_unknown_loss_never_falls_through_to_another():
    class Config:
        name, options = "ldam", {}

    with pytest.raises(MeidBenchError, match="unknown loss 'ldam'; known: asymmetric, bce, cb, "):
        create_criterion(Config(), SplitStats.from_counts([3, 2]))


def test_a_name_registers_once_and_a_class_needs_a_factory():
    registry: Registry = Registry("thing")
    registry.register("a", ScaledOptions)(lambda options, stats: "built")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", ScaledOptions)(lambda options, stats: "other")
    with pytest.raises(TypeError, match="from_options"):
        registry.register("b", ScaledOptions)(type("NoFactory", (), {}))
    assert registry.create("a", {}, SplitStats(2)) == "built"


def test_a_component_that_needs_a_statistic_says_which():
    class Config:
        name, options = "eql", {}

    with pytest.raises(ValueError, match="needs the split statistic 'num_videos'"):
        create_criterion(Config(), SplitStats.from_counts([10, 1]))


def test_every_recipe_section_is_parsed_by_its_registry(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: late_avg\ndescription: x\nsampler: {name: cbs, label_masks: true}\n")
    with pytest.raises(MeidBenchError, match="sampler.label_masks: unknown key; known keys here: label_mask"):
        load_recipe(bad)
    bad.write_text("base: late_avg\ndescription: x\nsampler: {name: uniform}\n")
    with pytest.raises(MeidBenchError, match="sampler.name: unknown sampler 'uniform'; one of cbs, instance, srs"):
        load_recipe(bad)


# -- recipes with a base ---------------------------------------------------------------------------------------------


def test_shipped_recipes_state_only_what_differs():
    texts = {name: yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text()) for name in list_recipes()}
    roots = [name for name, data in texts.items() if "base" not in data]
    assert roots == ["late_avg"]
    # The optimiser and the data settings are written once, in the root.
    assert [name for name, data in texts.items() if "optim" in data or "data" in data] == ["late_avg"]
    for name in list_recipes():
        assert load_recipe(name).name == name  # a recipe's name is its own, never its base's


def test_a_child_overrides_merges_and_replaces(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: meid\ndescription: MEID with a smaller CFS share and its own CharadesLT schedule\n"
                     "model: {cfs_ratio: 0.5}\n"
                     "loss: {name: focal, gamma: 1.0}\n"
                     "optim: {lr: 1.0e-3}\n"
                     "schedules: {charadeslt: {epochs: 10, lr: 1.0e-3, milestones: [8]}, charadesegolt: null}\n")
    recipe, meid = load_recipe(child), load_recipe("meid")
    assert recipe.name == "child" and recipe.description.startswith("MEID with")
    # model: the same component, merged key by key
    assert recipe.model.name == "meid" and recipe.model.options.cfs_ratio == 0.5
    assert recipe.model.options.distill_weight == meid.model.options.distill_weight
    # loss: another component, replaced whole (bce's options would not apply)
    assert recipe.loss.name == "focal" and recipe.loss.options.gamma == 1.0 and recipe.loss.options.alpha == 1.0
    assert recipe.optim.lr == 1e-3 and recipe.optim.milestones == meid.optim.milestones
    assert set(recipe.schedules) == {"charadeslt"} and recipe.schedules["charadeslt"].epochs == 10
    assert recipe.balanced_sampler == meid.balanced_sampler


def test_a_base_given_as_a_path_is_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.yaml").write_text("base: late_avg\ndescription: mine\nepochs: 7\n")
    (tmp_path / "derived.yaml").write_text("base: sub/mine.yaml\ndescription: derived\nbatch_size: 32\n")
    recipe = load_recipe(tmp_path / "derived.yaml")
    assert (recipe.epochs, recipe.batch_size, recipe.model.name) == (7, 32, "late_avg")


@pytest.mark.parametrize("text, fragment", [
    ("base: no_such_recipe\ndescription: x\n", "base: 'no_such_recipe' is not a shipped recipe; available:"),
    ("base: missing.yaml\ndescription: x\n", "missing.yaml: recipe file not found"),
    ("base: late_avg\nepochs: 3\n", "description: missing; a recipe with a base describes itself"),
    ("base: [late_avg]\ndescription: x\n", "base: expected a recipe name or a YAML file path"),
])
def test_bad_bases_are_one_line_errors(tmp_path, text, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(MeidBenchError, match=None) as caught:
        load_recipe(path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_cycle_of_bases_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\ndescription: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ndescription: b\n")
    with pytest.raises(MeidBenchError, match="the bases form a cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_set_name_replaces_the_section_options():
    # cb has options (beta, base); switching the loss must not carry them over to focal.
    recipe = apply_overrides(load_recipe("cb"), ["loss.name=focal", "loss.gamma=1.5"])
    assert recipe.loss.name == "focal" and recipe.loss.options.gamma == 1.5
    same = apply_overrides(load_recipe("cb"), ["loss.name=cb", "loss.beta=0.99"])
    assert same.loss.options.beta == 0.99 and same.loss.options.base == "bce"
    sampler = apply_overrides(load_recipe("cbs"), ["sampler.name=instance"])
    assert sampler.sampler.name == "instance" and sampler.sampler.label_mask is False


def test_the_recipes_command_prints_the_resolved_recipe(capsys):
    with pytest.raises(SystemExit) as code:
        main(["recipes", "meid_no_motion", "--json"])
    assert code.value.code in (0, None)
    printed = json.loads(capsys.readouterr().out)
    assert "base" not in printed and printed["name"] == "meid_no_motion"
    assert printed["model"]["motion"] is False and printed["optim"]["lr"] == 1e-4
    assert printed["balanced_sampler"] == {"name": "cbs", "label_mask": True}


def test_ldam_resolves_its_own_deferred_epoch():
    recipe = load_recipe("ldam_drw").for_benchmark("charadeslt").resolved()
    assert recipe.loss.options.drw_epoch == recipe.optim.milestones[0]
    with pytest.raises(MeidBenchError, match="recipe ldam_drw: loss.drw_epoch: null means the first lr decay"):
        apply_overrides(load_recipe("ldam_drw"), ["optim.milestones=[]"]).resolved()


def test_split_stats_check_their_shapes():
    with pytest.raises(ValueError, match="one entry per class"):
        SplitStats(3, class_counts=np.array([1, 2]))
    assert SplitStats.from_counts([4, 2]).num_classes == 2
