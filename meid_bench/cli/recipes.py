"""`meid-bench recipes`: the shipped recipes, and any recipe resolved to every key."""

from __future__ import annotations

import json

import click

from meid_bench.cli.output import echo_json, json_option
from meid_bench.errors import MeidBenchError


@click.command()
@click.argument("recipe", required=False)
@click.option("--benchmark", default=None, metavar="NAME",
              help="Resolve RECIPE as training on this benchmark does: its schedule from `schedules` first, then --set.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of RECIPE (repeatable), as `meid-bench train --set` does.")
@json_option
def recipes(recipe: str | None, benchmark: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """List the shipped recipes, or print RECIPE (a name or a YAML file) with every key resolved.

    The resolved recipe is what training records in run.json; saved to a file it is a recipe `meid-bench train
    --recipe FILE` accepts. A recipe's `schedules` replace its lr, milestones and epochs on their benchmark: to
    change those for one benchmark, resolve with --benchmark first (or --set schedules.NAME.lr=...).

    \b
    Examples:
      meid-bench recipes
      meid-bench recipes meid
      meid-bench recipes meid --benchmark charadeslt --set optim.lr=1e-3 > meid-charadeslt-lr1e-3.yaml
      meid-bench recipes late_avg --json
    """
    import yaml

    from meid_bench.train.config import apply_overrides, list_recipes, load_recipe, recipes_dir

    if recipe is None:
        if overrides or benchmark:
            raise MeidBenchError("recipes: --set needs a RECIPE to apply to, e.g. `meid-bench recipes meid --set "
                                 "optim.lr=1e-3`")
        shipped = [load_recipe(name) for name in list_recipes()]
        if as_json:
            echo_json({"folder": recipes_dir(), "recipes": [{"name": r.name, "model": r.model.name,
                                                             "description": r.description} for r in shipped]})
            return
        width = max(len(r.name) for r in shipped)
        click.echo(f"{len(shipped)} shipped recipes ({recipes_dir()}):")
        for item in shipped:
            click.echo(f"  {item.name:<{width}}  {item.description}")
        return
    from meid_bench.build.protocol import BENCHMARKS

    loaded = load_recipe(recipe)
    if benchmark is not None:
        if benchmark not in BENCHMARKS:
            raise MeidBenchError(f"--benchmark {benchmark}: unknown benchmark; one of {', '.join(BENCHMARKS)}")
        loaded = loaded.for_benchmark(benchmark)
    resolved = apply_overrides(loaded, overrides).to_dict()
    plain = json.loads(json.dumps(resolved))  # tuples to lists, for YAML
    if as_json:
        echo_json(plain)
    else:
        click.echo(yaml.safe_dump(plain, sort_keys=False, default_flow_style=None, allow_unicode=True, width=110),
                   nl=False)
