"""`meid-bench features extract`: features from raw videos or frame folders into a split's feature store."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from meid_bench.extract.catalog import BACKBONES


@click.command()
@click.option("--split", "split_dir", required=True, type=click.Path(path_type=Path), help="Split folder.")
@click.option("--videos", type=click.Path(path_type=Path), default=None,
              help="Folder of video files named <video id>.<container> (mp4, webm, mkv, avi, mov, ...).")
@click.option("--frames", type=click.Path(path_type=Path), default=None,
              help="Folder of frame folders <video id>/ holding images numbered by frame (the Charades RGB release).")
@click.option("--backbone", required=True, type=click.Choice(list(BACKBONES)),
              help="resnet50 / resnet101: ImageNet, per frame, 2048-d; r2plus1d_18 / r3d_18 / mc3_18: Kinetics-400, "
                   "per 16-frame clip, 512-d.")
@click.option("--weights", default="default", show_default=True,
              help="default (torchvision's published file, downloaded once into the torch hub cache), a weight set "
                   "name (IMAGENET1K_V1, IMAGENET1K_V2, KINETICS400_V1), a local .pth FILE, or random (tests only).")
@click.option("--fps", type=float, default=None,
              help="Feature frames per second [default: the benchmark's specification: 4 for charadeslt and "
                   "charadesegolt, 1 for videolt].")
@click.option("--frames-fps", type=float, default=24.0, show_default=True,
              help="With --frames: the rate the images were taken at.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Feature store to write [default: SPLIT/features.h5, what `meid-bench train` loads].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (float16 on CUDA).")
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True,
              help="Frames (or clips) per forward pass; part of what the features depend on.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Decoding threads.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Stored precision.")
@click.option("--resume", is_flag=True, help="Continue an interrupted extraction into --out.")
@click.option("--allow-missing", is_flag=True,
              help="Record videos without a readable source as missing instead of failing.")
@click.option("--force", is_flag=True, help="Replace an existing output (and any interrupted extraction into it).")
def extract(split_dir: Path, videos: Path | None, frames: Path | None, backbone: str, weights: str,
            fps: float | None, frames_fps: float, out: Path | None, device: str, batch: int, workers: int, dtype: str,
            resume: bool, allow_missing: bool, force: bool) -> None:
    """Extract frame features from the split's videos (or frame folders) into a feature store.

    Frames are sampled at --fps over each video's duration in the split (round(duration * fps) frames, as
    `features synth` counts them); each gets the backbone's features, computed with the preprocessing its
    weights expect (docs/features.md). Interrupted? Run the same command with --resume.

    \b
    Examples:
      meid-bench features extract --split splits/charadeslt --videos data/Charades_v1 --backbone resnet101
      meid-bench features extract --split splits/charadeslt --frames data/Charades_v1_rgb --backbone resnet101 \\
          --weights resnet101-cd907fc2.pth --device cuda:0 --resume
      meid-bench features extract --split splits/charadesegolt --videos data/CharadesEgo_v1 \\
          --backbone r2plus1d_18 --out features/charadesegolt-r2plus1d.h5
    """
    from meid_bench.extract.run import ExtractOptions, extract_features
    from meid_bench.logs import progress_bar

    options = ExtractOptions(split=split_dir, backbone=backbone, videos=videos, frames=frames, out=out,
                             weights=weights, fps=fps, frames_fps=frames_fps, device=device, batch=batch,
                             workers=workers, dtype=dtype, resume=resume, force=force, allow_missing=allow_missing)
    with contextlib.ExitStack() as stack:
        bars: list = []

        def start(count: int) -> None:
            # The bar counts the videos this run reads (not those without a source, nor those already done), so
            # its position and time left are those of the job.
            bars.append(stack.enter_context(progress_bar(count, "extracting", show_eta=True)))

        report = extract_features(options, progress=lambda n: bars[0].update(n), start=start)
    click.echo(f"wrote {report.path}: {report.videos} videos, {report.frames} frames of dimension {report.dim} "
               f"({dtype}); {len(report.missing)} recorded missing; {report.ignored} input entries not in the split "
               "ignored")
    for video_id, reason in report.missing[:5]:
        click.echo(f"  missing {video_id}: {reason}")
    if report.short:
        click.echo(f"{report.short} videos end more than one frame before their duration in the split (their last "
                   "frame is repeated)")
