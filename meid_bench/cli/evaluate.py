"""`meid-bench evaluate` (score one run or any predictions file) and `meid-bench report` (plots, tables, HTML)."""

from __future__ import annotations

from pathlib import Path

import click

from meid_bench.cli.output import echo_json, json_option
from meid_bench.errors import MeidBenchError


@click.command()
@click.option("--split", "split_dir", type=click.Path(path_type=Path),
              help="Split folder. Required with --predictions; with --run it overrides run.json's split path "
                   "(the checksum must still match).")
@click.option("--run", "run_dir", type=click.Path(path_type=Path),
              help="Run folder: scores RUN/predictions/<subset>.parquet against the run's split. Into the run's "
                   "own folder (no --out) this re-scores the run: its metrics file is replaced, keeping the fields "
                   "training wrote (best_epoch).")
@click.option("--predictions", "predictions_file", type=click.Path(path_type=Path),
              help="Predictions Parquet file from any code (format: docs/evaluation.md).")
@click.option("--subset", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Which subset of the split the predictions score.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Output folder for metrics.json and per_class.csv [default: the run folder, or the predictions "
                   "file's folder]. The val subset writes metrics_val.json and per_class_val.csv.")
@click.option("--force", is_flag=True, help="Replace existing metrics files. Not needed to re-score a run into its "
              "own folder: that replaces the run's metrics file and keeps the fields training wrote (best_epoch).")
@json_option
def evaluate(split_dir: Path | None, run_dir: Path | None, predictions_file: Path | None, subset: str,
             out_dir: Path | None, force: bool, as_json: bool) -> None:
    """Score predictions against a split: mAP, head/medium/tail mAP, top-k, per-class AP.

    \b
    Examples:
      meid-bench evaluate --run runs/charadeslt-meid-seed0
      meid-bench evaluate --run runs/charadeslt-meid-seed0 --subset val --json
      meid-bench evaluate --split splits/charadeslt --predictions my_method_test.parquet --out results/my_method
    """
    from contextlib import ExitStack

    from meid_bench.build.split_io import load_split
    from meid_bench.evaluator import Evaluator, check_metrics_outputs, metrics_paths, read_predictions, write_metrics
    from meid_bench.outputs import Input, is_kind, run_input, same_path, split_input
    from meid_bench.runs import evaluate_run, load_run_split, read_run, rescore_run
    from meid_bench.run_lock import acquire_run_lock, refuse_if_locked

    if (run_dir is None) == (predictions_file is None):
        raise MeidBenchError("evaluate: give exactly one of --run RUN_DIR or --predictions FILE.parquet")
    default_out = run_dir if run_dir is not None else predictions_file.parent
    target = out_dir if out_dir is not None else default_out
    # A run scored into its own folder is re-scored: its metrics file is the run's own (training wrote it), so it
    # is replaced without --force and keeps the fields training wrote (best_epoch). Anywhere else, --force rules.
    rescore = run_dir is not None and (out_dir is None or _same_folder(out_dir, run_dir))
    kept: list[str] = []
    # The output rule (outputs.py): the metrics never overwrite an input; of the run given with --run, only its
    # own metrics files are updated; another run's folder is never written into.
    inputs = [split_input(split_dir)] if split_dir is not None else []
    if run_dir is not None:
        inputs.append(run_input(run_dir, "--run", updatable=tuple(p.name for p in metrics_paths(run_dir, subset))))
    else:
        inputs.append(Input(predictions_file, "--predictions"))
    if is_kind(target, "run") and (run_dir is None or not same_path(target, run_dir)):
        raise MeidBenchError(f"{target}: --out is the folder of another run; its metrics come from its own "
                             "predictions, choose another --out")
    check_metrics_outputs(target, subset, force or rescore, inputs)
    into_run = run_dir is not None and is_kind(run_dir, "run") and same_path(target, run_dir)
    if run_dir is not None:
        refuse_if_locked(run_dir, "evaluate it")  # a run being trained has no final predictions yet
        run = read_run(run_dir)
        split = load_run_split(run, override=split_dir)
        if rescore:
            result, evaluator, kept = rescore_run(run, split, subset, force)
        else:
            result, evaluator = evaluate_run(run, split, subset)
        out = out_dir if out_dir is not None else run.path
    else:
        if split_dir is None:
            raise MeidBenchError("evaluate: --predictions needs --split DIR (the split the predictions were made "
                                 "for)")
        evaluator = Evaluator(load_split(split_dir), subset)
        video_ids, scores = read_predictions(predictions_file, evaluator.class_keys)
        result = evaluator.eval(video_ids, scores, source=str(predictions_file))
        out = out_dir if out_dir is not None else predictions_file.parent
    with ExitStack() as held:
        if into_run:  # one writer at a time in a run folder (run_lock.py)
            held.enter_context(acquire_run_lock(run_dir, "meid-bench evaluate", "--run"))
        written = write_metrics(out, result, evaluator.per_class(result), force=force or rescore)
    if as_json:
        echo_json({"metrics": result, "written": written, "rescored": rescore, "kept": kept})
        return
    click.echo(evaluator.table(result))
    if rescore:
        note = f", keeping {', '.join(kept)} from the earlier file" if kept else ""
        click.echo(f"re-scored the run {run.path} from {run.predictions_path(subset)}{note}")
    click.echo("wrote " + ", ".join(str(p) for p in written))


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _is_sweep_log(path: Path) -> bool:
    """``RUN.log`` beside the run folder ``RUN``, as `meid-bench sweep` writes them: ``report runs/*`` skips it."""
    return path.suffix == ".log" and path.is_file() and (path.parent / path.stem / "run.json").is_file()


@click.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Report folder (index.html, results.md, results.csv, one figure folder per split).")
@click.option("--runs-root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where to find runs when no RUN_DIR is given.")
@click.option("--reference", "references", default=None, metavar="METHODS",
              help="Comma-separated methods that the other methods are compared with, seed by seed (paired "
                   "differences with 95% intervals) [default: late_avg,attention, those present: the no-trick "
                   "baseline and the baseline with MEID's attention aggregator].")
@click.option("--bootstrap", type=click.IntRange(0, 100_000), default=None, metavar="N",
              help="Draws of the test videos for the test-set part of the paired intervals (0: seeds only) "
                   "[default: 500].")
@click.option("--force", is_flag=True, help="Replace an existing report folder.")
def report(run_dirs: tuple[Path, ...], out_dir: Path, runs_root: Path, references: str | None, bootstrap: int,
           force: bool) -> None:
    """Plots, results tables and one self-contained HTML page for runs (default: every run under runs/).

    Runs are grouped by split; a run without metrics.json is evaluated from predictions/test.parquet. The report
    opens with a verdict per split (real or SIMULATED features, the runs, the best method by validation); metrics
    are in percent, differences between methods in percentage points.

    \b
    Examples:
      meid-bench report
      meid-bench report runs/charadeslt-late_avg-seed0 runs/charadeslt-meid-seed0 --out reports/charadeslt
      meid-bench report --reference late_avg --out reports/vs-late-avg --force
    """
    from meid_bench.report.assemble import write_report
    from meid_bench.runs import find_runs

    runs = [path for path in run_dirs if not _is_sweep_log(path)] if run_dirs else find_runs(runs_root)
    if not runs:
        raise MeidBenchError(f"{runs_root}: holds no run folders (none with a run.json); train a run first or pass "
                             "RUN_DIR arguments")
    chosen = None
    if references is not None:
        chosen = [r.strip() for r in references.split(",") if r.strip()]
        if not chosen:
            raise MeidBenchError("--reference: give at least one method name, e.g. --reference late_avg")
    from meid_bench.report.inference import DEFAULT_BOOTSTRAP

    out = write_report(runs, out_dir, force=force, references=chosen,
                       bootstrap=DEFAULT_BOOTSTRAP if bootstrap is None else bootstrap)
    summary_path = out / "paired_differences.csv"
    if summary_path.is_file():
        import pandas as pd

        from meid_bench.report.tables import paired_console_lines

        for line in paired_console_lines(pd.read_csv(summary_path, keep_default_na=True)):
            click.echo(line)
    click.echo(f"wrote {out / 'index.html'} ({len(runs)} runs)")
