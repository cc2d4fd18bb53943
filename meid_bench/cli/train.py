"""`meid-bench train`."""

from __future__ import annotations

from pathlib import Path

import click

from meid_bench.cli.output import echo_json, json_option

_DEVICE_HELP = "auto (a GPU if one is visible), cpu, cuda (the current GPU) or cuda:N (GPU N)."

@click.command()
@click.option("--split", "split_dir", type=click.Path(path_type=Path), required=True, help="Split folder.")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="Feature store [default: <split>/features.h5].")
@click.option("--recipe", default="meid", show_default=True,
              help="A recipe name from recipes/ (meid, late_avg, cbs, ...) or a YAML file.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/<benchmark>-<recipe>-seed<seed>].")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE", help=_DEVICE_HELP)
@click.option("--epochs", type=int, default=None, help="Override the recipe's number of epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run in --out from its last checkpoint (a run stopped before its first "
                   "checkpoint starts from scratch).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Threads that read the next batches from the store while the model trains (when the frames are "
                   "not held on the device); 0 reads in the training thread.")
@click.option("--resident", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Hold all frames on the device (GPU or CPU memory) instead of reading the store per batch; "
                   "auto: when they take at most 75% of the GPU's free memory (50% of the available memory on "
                   "the CPU). Both ways see the same frames.")
@click.option("--memory-share", type=float, default=1.0, show_default=True,
              help="Share of the device's memory this run counts on for --resident auto: at most this share of its "
                   "whole memory (and never more than is free). `sweep` gives each of k runs on one GPU 1/k.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (repeatable), e.g. --set optim.lr=1e-3 --set data.train_frames=30.")
@json_option
def train(split_dir: Path, features: Path | None, recipe: str, out: Path | None, device: str, epochs: int | None,
          seed: int, resume: bool, workers: int, resident: str, memory_share: float, overrides: tuple[str, ...],
          as_json: bool) -> None:
    """Train a recipe on a split; the best epoch on validation is scored on test.

    \b
    Examples:
      meid-bench train --split splits/charadeslt
      meid-bench train --split splits/charadeslt --recipe late_avg --seed 1 --epochs 30 --set optim.lr=1e-3
      meid-bench train --split splits/charadeslt --device cuda:1 --json > result.json
      meid-bench train --split splits/charadeslt --out runs/charadeslt-meid-seed0 --resume
      meid-bench train --split splits/videolt --features videolt-r101.h5 --resident no --workers 2
      torchrun --nproc_per_node 2 -m meid_bench train --split splits/charadeslt --recipe meid
    """
    from meid_bench.logs import progress_wanted
    from meid_bench.train.loop import TrainOptions
    from meid_bench.train.distributed import launched_rank
    from meid_bench.train.loop import train as run_training

    options = TrainOptions(split=split_dir, features=features, recipe=recipe, out=out, device=device,
                           epochs=epochs, seed=seed, resume=resume, workers=workers, resident=resident,
                           memory_share=memory_share,
                           overrides=overrides, progress=progress_wanted())
    run_dir = run_training(options)
    if launched_rank() != 0:  # under torchrun rank 0 writes the run's files and reports it, once
        return
    if as_json:
        echo_json(run_summary(run_dir))
    else:
        click.echo(f"run: {run_dir}")


def run_summary(run_dir: Path) -> dict:
    """What ``train --json`` prints: the run folder, its best epoch and its validation and test metrics."""
    import json

    from meid_bench.records import shown_epoch

    def metrics(name: str) -> dict:
        record = json.loads((run_dir / name).read_text())
        keys = ("mAP", "mAP_head", "mAP_medium", "mAP_tail", "top1", "top5", "classes_evaluated")
        return {key: record.get(key) for key in keys}

    test = json.loads((run_dir / "metrics.json").read_text())
    return {"run": run_dir, "best_epoch": shown_epoch(test.get("best_epoch")), "val": metrics("metrics_val.json"),
            "test": metrics("metrics.json"), "files": {"run_json": run_dir / "run.json",
                                                        "metrics": run_dir / "metrics.json",
                                                        "predictions": run_dir / "predictions" / "test.parquet"}}


@click.command()
@click.option("--split", "split_dir", type=click.Path(path_type=Path), required=True, help="Split folder.")
@click.option("--recipes", default="all", show_default=True,
              help="Comma-separated recipe names or files, or 'all' (every file in recipes/).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--runs-root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Runs go to <runs-root>/<benchmark>-<recipe>-seed<seed>.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Training processes at a time.")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help=_DEVICE_HELP + " With auto or cuda on a machine with several GPUs, the runs are spread over "
                                  "all of them.")
@click.option("--epochs", type=int, default=None, help="Override every recipe's number of epochs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Recipe override for every run.")
def sweep(split_dir: Path, recipes: str, seeds: str, runs_root: Path, jobs: int, device: str, epochs: int | None,
          overrides: tuple[str, ...]) -> None:
    """Train recipes x seeds, several processes at a time; finished runs are skipped, cut-short ones resumed.

    \b
    Examples:
      meid-bench sweep --split splits/charadeslt --recipes meid,late_avg,attention --seeds 0,1,2 --jobs 2
      meid-bench sweep --split splits/charadeslt --recipes all --jobs 8 --device cuda --epochs 60
      meid-bench sweep --split splits/charadeslt --recipes meid,attention --jobs 2 --device cuda:1
    """
    import sys

    from meid_bench.train.sweep import parse_seeds, plan_sweep, run_sweep, sweep_devices

    from meid_bench.bounds import JOBS_MAX, check_int_range

    check_int_range(jobs, "--jobs", 1, JOBS_MAX)
    runs = plan_sweep(split_dir, [r.strip() for r in recipes.split(",") if r.strip()], parse_seeds(seeds), runs_root,
                      overrides=overrides, epochs=epochs)
    train_args = [*(["--epochs", str(epochs)] if epochs is not None else []),
                  *[a for o in overrides for a in ("--set", o)]]
    failed = run_sweep(split_dir, runs, jobs, train_args, devices=sweep_devices(device))
    if failed:
        click.echo(f"{len(failed)} of {len(runs)} runs failed", err=True)
        sys.exit(1)
    click.echo(f"all {len(runs)} runs done; `meid-bench report {runs_root}/*` summarises them")
