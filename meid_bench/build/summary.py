"""A plain-text summary of a split: sizes per group, fidelity to the targets, frame-level imbalance."""

from __future__ import annotations

import numpy as np

from meid_bench.build.split_io import GROUPS, Split


def summarize_split(split: Split) -> str:
    manifest, classes = split.manifest, split.classes
    lines = [f"{manifest['benchmark']} (protocol {manifest['protocol']}) at {split.path}",
             "parameters: " + ", ".join(f"{k}={v}" for k, v in manifest["parameters"].items())]
    header = f"{'group':<8}{'classes':>8}{'train videos/class':>22}{'val pos.':>10}{'test pos.':>11}"
    lines += ["", header, "-" * len(header)]
    for group in GROUPS + ("all",):
        rows = classes if group == "all" else classes[classes["group"] == group]
        if len(rows) == 0:
            lines.append(f"{group:<8}{0:>8}")
            continue
        span = f"{rows['train_count'].min()}..{rows['train_count'].max()}"
        lines.append(f"{group:<8}{len(rows):>8}{span:>22}{rows['val_count'].sum():>10}{rows['test_count'].sum():>11}")
    rows = manifest["rows"]
    lines += ["", f"videos: train {rows['train']}, val {rows['val']}, test {rows['test']}"]
    fidelity = manifest.get("fidelity", {})
    if "requested_imbalance" in fidelity:
        lines.append(f"imbalance: requested {fidelity['requested_imbalance']:g}, achieved "
                     f"{fidelity['achieved_imbalance']:.1f}; target scale {fidelity['target_scale']:g}; "
                     f"|log(achieved/target)| median {fidelity['abs_log_ratio_median']:.3f}, p90 "
                     f"{fidelity['abs_log_ratio_p90']:.3f} (bounds {'met' if fidelity['bounds_met'] else 'NOT met'})")
    else:
        ratio = fidelity.get("train_videos_max_over_min", float("nan"))
        lines.append(f"imbalance (train videos, largest / smallest class): {ratio:.1f}")
    seconds = classes["train_seconds"].to_numpy()
    if np.isfinite(seconds).any() and (seconds > 0).any():
        lines.append(f"frame-level imbalance (annotated seconds, largest / smallest class): "
                     f"{seconds.max() / seconds[seconds > 0].min():.1f}")
    return "\n".join(lines)


def split_record(split: Split) -> dict:
    """The split's identity and sizes as plain data (what ``build --json`` and ``verify --json`` print)."""
    manifest, classes = split.manifest, split.classes
    return {
        "path": str(split.path),
        "benchmark": split.name,
        "protocol": manifest.get("protocol"),
        "checksum": split.checksum,
        "parameters": manifest.get("parameters", {}),
        "videos": {subset: len(split.table(subset)) for subset in ("train", "val", "test")},
        "classes": split.num_classes,
        "groups": {group: int((classes["group"] == group).sum()) for group in GROUPS},
        "fidelity": manifest.get("fidelity", {}),
    }
