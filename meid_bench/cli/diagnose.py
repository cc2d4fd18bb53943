"""`meid-bench diagnose`: mirrored-pair AP, complementary-frame-selection retention, attention against activity."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="Charades annotation folder with the class mapping and verb files, for the mirrored pairs "
                   "[default: the pairs a simulator-v2 store records].")
@click.option("--subset", type=click.Choice(["train", "val", "test"]), default="train", show_default=True,
              help="Videos on which frame selection and attention are examined.")
@click.option("--max-videos", type=click.IntRange(1), default=2000, show_default=True,
              help="At most this many videos of --subset for the frame diagnostics.")
@click.option("--no-frames", is_flag=True, help="Only the mirrored-pair AP from the test predictions (no checkpoint "
                                               "is loaded: no per-expert pair AP).")
@click.option("--no-ceiling", is_flag=True, help="Leave out the whole-video probe beside the pair AP.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write every figure to this JSON file.")
@click.option("--force", is_flag=True, help="Replace an existing --json file (only one `diagnose` wrote).")
def diagnose(run_dirs: tuple[Path, ...], annotations: Path | None, subset: str, max_videos: int, no_frames: bool,
             no_ceiling: bool, json_out: Path | None, force: bool) -> None:
    """Diagnose trained runs beyond mAP (docs/results.md explains each figure).

    \b
    pair AP: among test videos with exactly one class of a mirrored pair (same object, opposite verbs), the AP
      of the score difference between the pair's classes; chance = share of positives. For MEID also per
      expert (expert 1, expert 2, fused) from the checkpoint, beside the whole-video probe on the run's store
      (mean-only / order-blind / order-aware: what a video-level model pooling a mean and a half contrast reaches).
    CFS keeps: share of tail-class / head-class / background frames that MEID's complementary frame selection
      keeps, against its ratio (what a random selection keeps); bg: background's share of all frames -> of kept.
    attention x T: attention weight times frames (1 = uniform) by number of active classes on the frame; rho:
      median per-video Spearman correlation of attention with frame norm.

    \b
    Examples:
      meid-bench diagnose runs/charadeslt-meid-seed0 runs/charadeslt-attention-seed0
      meid-bench diagnose runs/charadeslt-meid-seed0 --annotations data/charades --json meid-diagnosis.json
    """
    from meid_bench.diagnose import diagnose_run, format_table, write_json
    from meid_bench.outputs import Output, check_outputs, run_input, source_input
    from meid_bench.run_lock import refuse_if_locked

    if json_out is not None:  # before any work: never over a run it reads, replaces only an earlier diagnosis
        inputs = [run_input(run, "RUN_DIR") for run in run_dirs]
        inputs += [source_input(annotations, "--annotations")] if annotations is not None else []
        check_outputs([Output(json_out, "--json", "diagnosis")], inputs, force)
    for run in run_dirs:
        refuse_if_locked(run, "diagnose it")
    results = [diagnose_run(run, annotations, subset, max_videos, frames=not no_frames, ceiling=not no_ceiling)
               for run in run_dirs]
    click.echo(format_table(results))
    if json_out is not None:
        click.echo(f"wrote {write_json(json_out, results)}")
