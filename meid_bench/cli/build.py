"""`meid-bench build`, `meid-bench verify` and `meid-bench demo`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from meid_bench.build.profile import PROFILES
from meid_bench.build.protocol import BENCHMARKS, SOURCE_FOLDERS, BuildOptions, build_and_write
from meid_bench.build.readers import VIEWS
from meid_bench.build.reference import compare_to_reference, make_reference
from meid_bench.build.split_io import load_split
from meid_bench.build.summary import split_record, summarize_split
from meid_bench.cli.output import echo_json, json_option
from meid_bench.errors import VerificationError, warn
from meid_bench.fileio import write_json_atomic
from meid_bench.outputs import Output, check_outputs, split_input


def default_annotations(benchmark: str) -> Path:
    return Path(os.environ.get("MEID_BENCH_DATA", "data")) / SOURCE_FOLDERS[benchmark]


def _report_reference(split, status: str, differences: list[str], quiet_match: bool = False) -> None:
    """Print how the split compares with the shipped reference (:func:`compare_to_reference`); a difference is a
    loud warning on stderr. ``quiet_match`` (for --json, whose stdout is one JSON object) prints only the warning."""
    if quiet_match and status != "differ":
        return
    if status == "match":
        from meid_bench.build.reference import reference_path

        # The file itself, wherever it is installed (a wheel has no splits/expected/ folder).
        click.echo(f"shipped reference: MATCH (same videos, labels and classes as {reference_path(split.name)})")
    elif status == "differ":
        warn(f"shipped reference: DIFFERENT - this default-protocol {split.name} split is NOT the published "
             f"benchmark ({'; '.join(differences)}); results on it are not comparable with published ones")
    elif status == "not-applicable":
        click.echo("shipped reference: not compared (built with non-default parameters)")


def _reference_record(status: str, differences: list[str]) -> dict:
    return {"status": status, "differences": differences}


def _default_store_attrs(split_dir: Path) -> tuple[Path, dict] | None:
    """The split's default feature store and its root attributes, or None without one."""
    from meid_bench.build.features import default_feature_path
    from meid_bench.build.features.store import FeatureStore

    path = default_feature_path(split_dir)
    return (path, dict(FeatureStore(path).attrs)) if path.is_file() else None


def _report_feature_spec(split_dir: Path) -> None:
    # Which recommended feature specification the split's default store follows (docs/protocol.md, section 8).
    from meid_bench.extract.spec import describe_spec

    store = _default_store_attrs(split_dir)
    if store is not None:
        click.echo(f"{store[0]}: {describe_spec(store[1])}")


def _feature_spec_record(split_dir: Path) -> dict | None:
    """The same for ``--json``: the default store, its specification (or null) and why; None without a store."""
    from meid_bench.extract.spec import spec_of

    store = _default_store_attrs(split_dir)
    if store is None:
        return None
    name, reason = spec_of(store[1])
    return {"store": store[0], "specification": name, "reason": reason}


def _parse_scale(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither 'auto' nor a number", param_hint="--target-scale") from None


@click.command()
@click.argument("benchmark", type=click.Choice(BENCHMARKS))
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="Folder with the source's annotation files [default: $MEID_BENCH_DATA/<source>, "
                   "MEID_BENCH_DATA defaulting to ./data].")
@click.option("--imbalance", type=float, default=100.0, show_default=True,
              help="Target imbalance factor IF = largest / smallest class target (charadeslt, charadesegolt).")
@click.option("--profile", type=click.Choice(PROFILES), default="exponential", show_default=True,
              help="Shape of the long-tail target profile.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the selection's tie-breaking.")
@click.option("--view", type=click.Choice(VIEWS), default="ego", show_default=True,
              help="charadesegolt: first-person videos (ego), third-person (exo) or all.")
@click.option("--head-above", type=int, default=None,
              help="Head classes have more training videos than this [default: 100; videolt 500].")
@click.option("--tail-below", type=int, default=None,
              help="Tail classes have fewer training videos than this [default: 20; videolt 101].")
@click.option("--target-scale", default="auto", show_default=True,
              help="Targets = this x the largest profile the class counts allow; 'auto' takes the largest of "
                   "1.0, 0.95, ..., 0.5 whose selection meets the fidelity bounds (docs/protocol.md).")
@click.option("--val-per-class", type=int, default=20, show_default=True,
              help="Validation positives sought per class from the training videos not kept.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output split folder [default: splits/<benchmark>].")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--expect-reference", is_flag=True,
              help="Fail (exit status 1, nothing written) unless the build reproduces the shipped reference of the "
                   "default build; without it a difference is a warning.")
@json_option
def build(benchmark: str, annotations: Path | None, imbalance: float, profile: str, seed: int, view: str,
          head_above: int | None, tail_below: int | None, target_scale: str, val_per_class: int, out: Path | None,
          force: bool, expect_reference: bool, as_json: bool) -> None:
    """Build a long-tailed multi-label split folder from raw annotations (protocol v1).

    A default build is compared with the reference shipped with meid-bench (the package data
    meid_bench.references; splits/expected/ in a source checkout): a difference is a warning on
    stderr, or with --expect-reference an error (exit status 1) before anything is written.

    \b
    Examples:
      meid-bench build charadeslt --annotations data/charades --imbalance 100
      meid-bench build charadeslt --annotations data/charades --expect-reference
      meid-bench build charadeslt --annotations data/charades --profile pareto --imbalance 50 --out splits/clt-p50
      meid-bench build charadesegolt --annotations data/charadesego --view ego
      meid-bench build videolt --annotations data/videolt
      meid-bench build charadeslt --annotations data/charades --json > build.json
    """
    options = BuildOptions(benchmark=benchmark, imbalance=imbalance, profile=profile, seed=seed, view=view,
                           head_above=head_above, tail_below=tail_below, val_per_class=val_per_class,
                           target_scale=_parse_scale(target_scale))
    out = out if out is not None else Path("splits") / benchmark
    path = build_and_write(options, annotations or default_annotations(benchmark), out, force=force,
                           expect_reference=expect_reference)
    split = load_split(path)
    status, differences = compare_to_reference(split)
    if as_json:
        echo_json({"split": split_record(split), "reference": _reference_record(status, differences)})
    else:
        click.echo(summarize_split(split))
    _report_reference(split, status, differences, quiet_match=as_json)


@click.command()
@click.argument("split_dir", type=click.Path(path_type=Path))
@click.option("--write-reference", type=click.Path(path_type=Path), default=None,
              help="Maintainers: write this split's reference (ids and content hashes, no labels) to a file.")
@click.option("--without-ids", is_flag=True, help="With --write-reference: leave the video ids out.")
@json_option
def verify(split_dir: Path, write_reference: Path | None, without_ids: bool, as_json: bool) -> None:
    """Verify a split folder: every field and column, the checksums, row counts and content hashes recomputed from
    the tables, and the shipped reference.

    Exit status: 0 when everything matches (or no reference applies), 1 when a table does not match manifest.json
    or a default build does not match the shipped reference, 2 for a damaged or malformed split folder. With
    --json the JSON object is printed in every case that reaches the reference comparison.

    \b
    Examples:
      meid-bench verify splits/charadeslt
      meid-bench verify splits/charadeslt --json
      meid-bench verify splits/charadeslt --write-reference charadeslt-reference.json
    """
    if write_reference is not None:  # replaces an earlier reference file, never anything else (outputs.py)
        check_outputs([Output(write_reference, "--write-reference", "reference")], [split_input(split_dir)],
                      force=True)
    split = load_split(split_dir)
    if write_reference is not None:
        write_json_atomic(write_reference, make_reference(split, include_ids=not without_ids))
        if as_json:
            echo_json({"split": split_record(split), "checks": "ok", "features": _feature_spec_record(split_dir),
                       "reference_written": write_reference})
        else:
            click.echo(f"{split_dir}: checksums, row counts and content hashes OK (split checksum "
                       f"{split.checksum[:16]})")
            _report_feature_spec(split_dir)
            click.echo(f"reference written to {write_reference}")
        return
    status, differences = compare_to_reference(split)
    if as_json:
        echo_json({"split": split_record(split), "checks": "ok", "features": _feature_spec_record(split_dir),
                   "reference": _reference_record(status, differences)})
    else:
        click.echo(f"{split_dir}: checksums, row counts and content hashes OK (split checksum {split.checksum[:16]})")
        _report_feature_spec(split_dir)
    if status == "differ":
        raise VerificationError(f"{split_dir}: shipped reference: DIFFERENT - {'; '.join(differences)}")
    if not as_json:
        _report_reference(split, status, differences)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo"), show_default=True,
              help="Folder for everything the demo writes.")
@click.option("--force", is_flag=True, help="Replace the demo's earlier outputs in --out.")
def demo(out: Path, force: bool) -> None:
    """Run the pipeline on a built-in synthetic annotation set (no download needed).

    \b
    Example:
      meid-bench demo --out demo
    """
    from meid_bench.demo import run_demo

    report = run_demo(out, force=force)
    click.echo(f"report: {report / 'index.html'}")
