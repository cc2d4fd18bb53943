"""`meid-bench features`: pack released features into a store, synthesise proxy features, inspect and probe."""

from __future__ import annotations

from pathlib import Path

import click

from meid_bench.logs import progress_bar

_DTYPES = click.Choice(["float16", "float32"])


@click.group()
def features() -> None:
    """Frame feature stores: extract from videos, pack released features, simulate proxy features, inspect, probe.

    \b
    Examples:
      meid-bench features extract --split splits/charadeslt --videos data/Charades_v1 --backbone resnet101
      meid-bench features synth --split splits/charadeslt
      meid-bench features pack --split splits/videolt --source /data/videolt/r101 --format npy \\
          --out features/videolt-r101.h5 --dtype float16
      meid-bench features info splits/charadeslt/features.h5 --split splits/charadeslt
    """


def _progress(label: str, length: int):
    return progress_bar(length, label)


def _prepare_output(out: Path, force: bool, inputs: list) -> None:
    # Before any work or progress bar: an output that cannot be written, exists without --force, is one of the
    # command's inputs or is not a feature store (--force replaces only a store) is refused (outputs.py);
    # temporary files of an earlier write of this output that was killed are removed.
    from meid_bench.fileio import remove_stale_staging
    from meid_bench.outputs import Output, check_outputs

    check_outputs([Output(out, "--out", "store")], inputs, force)
    remove_stale_staging(out, suffix=".h5")


@features.command()
@click.option("--split", "split_dir", required=True, type=click.Path(path_type=Path), help="Split folder.")
@click.option("--source", required=True, type=click.Path(path_type=Path),
              help="Folder of per-video feature files (see --format).")
@click.option("--format", "fmt", required=True, type=click.Choice(["npy", "i3d", "txt-dir"]),
              help="npy: <id>.npy [T, D]; i3d: <id>.npy [T, 1, 1, D]; txt-dir: <id>/ with one vector file per frame.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Feature store to write (.h5).")
@click.option("--dtype", type=_DTYPES, default="float32", show_default=True, help="Stored precision.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Parallel readers.")
@click.option("--allow-missing", is_flag=True, help="Record videos without features as missing instead of failing.")
@click.option("--frame-labels", is_flag=True, help="Also store per-frame labels derived from the segments.")
@click.option("--fps", type=float, default=None,
              help="Frame rate of the features, if known (recorded; places frames for --frame-labels).")
@click.option("--extractor", default="", help="Name of the feature extractor, recorded in the store.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def pack(split_dir: Path, source: Path, fmt: str, out: Path, dtype: str, workers: int, allow_missing: bool,
         frame_labels: bool, fps: float | None, extractor: str, force: bool) -> None:
    """Pack released per-video features into one feature store for a split.

    \b
    Examples:
      meid-bench features pack --split splits/videolt --source feats/resnet101 --format npy --out videolt-r101.h5
      meid-bench features pack --split splits/charadeslt --source Charades_v1_features_rgb --format txt-dir \\
          --out splits/charadeslt/features.h5 --dtype float16 --fps 4
    """
    from meid_bench.build.features.pack import pack_features, split_video_table
    from meid_bench.build.split_io import load_split
    from meid_bench.checks import check_number

    from meid_bench.outputs import source_input, split_input

    check_number(fps, "--fps", low=0, low_open=True, allow_none=True)
    _prepare_output(out, force, [split_input(split_dir), source_input(source, "--source")])
    split = load_split(split_dir)
    with _progress("packing", len(split_video_table(split))) as bar:
        report = pack_features(split, source, fmt, out, dtype=dtype, workers=workers, allow_missing=allow_missing,
                               frame_labels=frame_labels, fps=fps, extractor=extractor, force=force,
                               progress=bar.update)
    click.echo(f"wrote {report.path}: {report.videos} videos, {report.frames} frames of dimension {report.dim} "
               f"({report.dtype}); {len(report.missing)} recorded missing; {report.ignored} source entries not in "
               "the split ignored")


@features.command()
@click.option("--split", "split_dir", required=True, type=click.Path(path_type=Path), help="Split folder.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Feature store to write [default: SPLIT/features.h5, what `meid-bench train` loads].")
@click.option("--version", "version", type=click.IntRange(1, 3), default=1, show_default=True,
              help="Simulator version: 1, 2 (composed classes, temporal order, mirrored verbs) or 3 (v2 whose "
                   "mirrored pairs differ only in order); docs/features.md.")
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="Charades annotation folder with the class mapping, verb and object files (v2 and v3 on "
                   "CharadesLT / CharadesEgoLT).")
@click.option("--dim", type=int, default=256, show_default=True, help="Feature dimension.")
@click.option("--fps", type=float, default=4.0, show_default=True, help="Simulated frames per second.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--noise", type=float, default=2.0, show_default=True, help="Per-frame Gaussian noise (norm).")
@click.option("--prototype-scale", type=float, default=1.0, show_default=True, help="Norm of a class prototype.")
@click.option("--instance-scale", type=float, default=1.5, show_default=True,
              help="Norm of each video's own variation of a class.")
@click.option("--class-overlap", type=float, default=0.6, show_default=True,
              help="Share of a prototype made of factors common to several classes, in [0, 1).")
@click.option("--context-scale", type=float, default=1.5, show_default=True,
              help="Norm of the per-video context (scene, subject, video).")
@click.option("--background-scale", type=float, default=1.0, show_default=True,
              help="Norm of the background prototype on frames without an action.")
@click.option("--default-duration", type=float, default=30.0, show_default=True,
              help="Seconds simulated for videos without a duration (VideoLT).")
@click.option("--temporal-scale", type=float, default=1.5, show_default=True,
              help="v2: amplitude of a class's course along its verb's direction over a segment.")
@click.option("--noise-time-constant", type=float, default=2.0, show_default=True,
              help="v2: seconds over which the frame noise stays correlated (AR(1)); 0 for independent noise.")
@click.option("--difficulty-spread", type=float, default=0.4, show_default=True,
              help="v2: spread of the per-class variation scale, drawn per class independently of its frequency.")
@click.option("--dtype", type=_DTYPES, default="float16", show_default=True, help="Stored precision.")
@click.option("--frame-labels", is_flag=True, help="Also store per-frame labels (the simulated ground truth).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def synth(split_dir: Path, out: Path | None, version: int, annotations: Path | None, dim: int, fps: float, seed: int,
          noise: float, prototype_scale: float, instance_scale: float, class_overlap: float, context_scale: float,
          background_scale: float, default_duration: float, temporal_scale: float, noise_time_constant: float,
          difficulty_spread: float, dtype: str, frame_labels: bool, force: bool) -> None:
    """Simulate proxy frame features from the split's temporal annotations (NOT real features; docs/features.md).

    \b
    Examples:
      meid-bench features synth --split splits/charadeslt
      meid-bench features synth --split splits/charadeslt --version 2 --annotations data/charades \\
          --frame-labels --out splits/charadeslt/features-v2.h5
      meid-bench features synth --split splits/charadeslt --dim 128 --noise 3.0 --out /tmp/harder.h5
    """
    from meid_bench.build.features import default_feature_path
    from meid_bench.build.features.pack import split_video_table
    from meid_bench.build.features.synth import SynthConfig, synthesize_features
    from meid_bench.build.split_io import load_split

    config = SynthConfig(version=version, dim=dim, fps=fps, seed=seed, noise=noise, prototype_scale=prototype_scale,
                         instance_scale=instance_scale, class_overlap=class_overlap, context_scale=context_scale,
                         background_scale=background_scale, default_duration=default_duration, dtype=dtype,
                         temporal_scale=temporal_scale, noise_time_constant=noise_time_constant,
                         difficulty_spread=difficulty_spread)
    config.validate()
    from meid_bench.outputs import source_input, split_input

    out = default_feature_path(split_dir) if out is None else out
    _prepare_output(out, force, [split_input(split_dir)] + ([source_input(annotations, "--annotations")] if annotations
                                                              is not None else []))
    split = load_split(split_dir)
    with _progress("simulating", len(split_video_table(split))) as bar:
        path = synthesize_features(split, out, config, frame_labels=frame_labels, force=force,
                                   annotations=annotations, progress=bar.update)
    click.echo(f"wrote {path}: SIMULATED features (simulator v{version}), dimension {dim}, {fps:g} frames per "
               f"second, seed {seed}")


@features.command()
@click.argument("store_path", type=click.Path(path_type=Path))
@click.option("--split", "split_dir", type=click.Path(path_type=Path), default=None,
              help="Also check that the store matches this split.")
def info(store_path: Path, split_dir: Path | None) -> None:
    """Describe a feature store (and check it against a split).

    \b
    Example:
      meid-bench features info splits/charadeslt/features.h5 --split splits/charadeslt
    """
    from meid_bench.build.features.store import FeatureStore
    from meid_bench.build.split_io import load_split
    from meid_bench.extract.spec import describe_spec

    store = FeatureStore(store_path)
    lengths = store.offsets[1:] - store.offsets[:-1]
    click.echo(f"{store.path}: {store.num_videos} videos, {store.total_frames} frames, dimension {store.dim}, "
               f"{store.dtype.name}")
    click.echo(f"frames per video: min {lengths.min()}, median {int(sorted(lengths)[len(lengths) // 2])}, max "
               f"{lengths.max()}; fps {store.fps if store.fps else 'unknown'}")
    click.echo(f"generator: {store.attrs.get('generator', '')}; simulated: {'YES' if store.simulated else 'no'}")
    click.echo(describe_spec(store.attrs))
    click.echo(f"split checksum: {store.split_checksum}; benchmark: {store.attrs.get('benchmark', '')}; "
               f"missing videos: {len(store.missing_video_ids)}; per-frame labels: "
               f"{'yes' if store.has_frame_labels else 'no'}")
    if split_dir is not None:
        store.check_split(load_split(split_dir))
        click.echo(f"matches {split_dir}")


@features.command()
@click.option("--split", "split_dir", required=True, type=click.Path(path_type=Path), help="Split folder.")
@click.option("--features", "store_path", type=click.Path(path_type=Path), default=None,
              help="Feature store [default: SPLIT/features.h5].")
@click.option("--train-subset", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--eval-subset", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.option("--mirrored-pairs", is_flag=True,
              help="Instead: the temporal-order control on mirrored class pairs (same object, opposite verbs).")
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="With --mirrored-pairs: Charades folder with the class mapping and verb files [default: the "
                   "pairs a simulator-v2 store records].")
@click.option("--alone", is_flag=True,
              help="With --mirrored-pairs: only frames on which the pair's class is the one active class (needs "
                   "per-frame labels).")
@click.option("--whole-video", is_flag=True,
              help="With --mirrored-pairs: whole videos (60 evenly spaced frames, no segment boundaries), the "
                   "ceiling a video-level model can reach; mean-only, order-blind and order-aware descriptors.")
def probe(split_dir: Path, store_path: Path | None, train_subset: str, eval_subset: str, mirrored_pairs: bool,
          annotations: Path | None, alone: bool, whole_video: bool) -> None:
    """Linear probe on mean-pooled features: per-group mAP against chance (a sanity check of a store).

    With --mirrored-pairs: for each mirrored class pair, a probe on the frames of one segment tells the two
    classes apart from order-blind [mean, |second half - first half|] and from order-aware [mean, second half -
    first half] descriptors of the same size; AP averaged over pairs, and the order gain with its 95% interval.
    With --whole-video as well: the same on whole videos showing one class of the pair (60 evenly spaced frames,
    halves of the video instead of the segment), plus a mean-only descriptor.

    \b
    Examples:
      meid-bench features probe --split splits/charadeslt
      meid-bench features probe --split splits/charadeslt --mirrored-pairs --annotations data/charades
      meid-bench features probe --split splits/charadeslt --mirrored-pairs --whole-video --annotations data/charades
    """
    from meid_bench.build.features import default_feature_path
    from meid_bench.build.features.probe import linear_probe
    from meid_bench.build.features.store import FeatureStore
    from meid_bench.build.split_io import load_split

    from meid_bench.errors import warn

    split = load_split(split_dir)
    store = FeatureStore(default_feature_path(split_dir) if store_path is None else store_path)
    store.check_split(split, subsets=(train_subset, eval_subset))
    if train_subset == eval_subset:
        warn(f"--train-subset and --eval-subset are both {train_subset}: the probe is scored on the videos it was "
             "fitted on, so its AP is optimistic (not a held-out result); use --eval-subset test for one")
    if (alone or whole_video) and not mirrored_pairs:
        raise click.UsageError(f"{'--alone' if alone else '--whole-video'} applies to --mirrored-pairs only")
    if alone and whole_video:
        raise click.UsageError("--alone and --whole-video exclude each other: --alone keeps frames inside segments")
    if mirrored_pairs:
        from meid_bench.build.features.probe import mirrored_pair_probe, mirrored_pairs_of, whole_video_pair_probe

        pairs = mirrored_pairs_of(store, [str(k) for k in split.classes["class_key"]], annotations)
        if whole_video:
            found = whole_video_pair_probe(split, store, pairs, train_subset, eval_subset)
            interval = _order_gain_interval(found)
            click.echo(f"mirrored-pair probe on whole videos, 60 evenly spaced frames ({train_subset} -> "
                       f"{eval_subset}, {found['pairs']} pairs): AP mean-only {found['mean_only']:.3f}, order-blind "
                       f"{found['order_blind']:.3f}, order-aware {found['order_aware']:.3f}, chance "
                       f"{found['chance']:.3f}; order gain {found['order_gain']:+.3f} {interval}")
            return
        found = mirrored_pair_probe(split, store, pairs, train_subset, eval_subset, alone=alone)
        interval = _order_gain_interval(found)
        click.echo(f"mirrored-pair probe on {'frames of one class alone' if alone else 'segment frames'} "
                   f"({train_subset} -> {eval_subset}, {found['pairs']} pairs): AP order-blind "
                   f"{found['order_blind']:.3f}, order-aware {found['order_aware']:.3f}, chance {found['chance']:.3f}; "
                   f"order gain {found['order_gain']:+.3f} {interval}")
        return
    result = linear_probe(split, store, train_subset, eval_subset)
    click.echo(f"linear probe on mean-pooled frames ({train_subset} -> {eval_subset}, {result['evaluated']} classes "
               "evaluated)")
    click.echo(f"{'group':8} {'mAP':>7} {'chance':>7}")
    for group in ("all", "head", "medium", "tail"):
        suffix = "" if group == "all" else f"_{group}"
        click.echo(f"{group:8} {result['mAP' + suffix]:7.3f} {result['chance' + suffix]:7.3f}")


def _order_gain_interval(found: dict) -> str:
    """The order gain's 95% interval over the mirrored pairs, as the probe lines print it."""
    low, high = found["order_gain_ci95"]
    return f"[95% CI {low:+.3f}, {high:+.3f}]" if found["pairs"] > 1 else "(one pair: no interval)"


from meid_bench.cli.extract import extract as _extract  # noqa: E402

features.add_command(_extract)

