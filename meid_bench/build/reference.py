"""Shipped references: what a rebuild of a default benchmark must reproduce, without shipping any label.

The Charades licence forbids redistributing labels, so the repository ships, per default build, only the video ids
of each split and the content hashes of the tables (``splits/expected/<benchmark>.json``). A rebuild on the real
files is compared to them; a match means the same videos, labels, segments and classes, byte for byte.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

from meid_bench.build.split_io import TABLES, VIDEO_TABLES, Split

# The package data meid_bench.references: splits/expected/ of the repository, installed with the package.
REFERENCE_DIR = Path(str(importlib.resources.files("meid_bench.references")))


def reference_path(benchmark: str, reference_dir: Path = REFERENCE_DIR) -> Path:
    return reference_dir / f"{benchmark}.json"


def make_reference(split: Split, include_ids: bool = True) -> dict:
    manifest = split.manifest
    reference = {
        "benchmark": manifest["benchmark"],
        "protocol": manifest["protocol"],
        "parameters": manifest["parameters"],
        "sources": [{"file": s["file"], "sha256": s["sha256"]} for s in manifest["sources"]],
        "tables": {name: {"rows": manifest["files"][f"{name}.parquet"]["rows"],
                          "content_sha256": manifest["files"][f"{name}.parquet"]["content_sha256"]}
                   for name in TABLES},
    }
    if include_ids:
        reference["video_ids"] = {name: split.table(name)["video_id"].tolist() for name in VIDEO_TABLES}
    return reference


def compare_to_reference(split: Split, reference_dir: Path = REFERENCE_DIR) -> tuple[str, list[str]]:
    """Compare a loaded split with the shipped reference of its benchmark.

    Returns (status, differences); status is ``match``, ``differ``, ``not-applicable`` (other parameters or
    sources than the reference's) or ``none`` (no reference shipped for this benchmark).
    """
    path = reference_path(split.manifest["benchmark"], reference_dir)
    if not path.is_file():
        return "none", []
    reference = json.loads(path.read_text())
    mine = make_reference(split, include_ids="video_ids" in reference)
    if mine["parameters"] != reference["parameters"] or mine["protocol"] != reference["protocol"]:
        return "not-applicable", ["the split was built with other parameters than the shipped reference"]
    differences = []
    if mine["sources"] != reference["sources"]:
        differences.append("source files differ from the reference's (sha256): another release or edited files")
    for name in TABLES:
        if mine["tables"][name] != reference["tables"][name]:
            differences.append(f"table {name}: rows or content hash differ")
    for name in reference.get("video_ids", {}):
        expected, actual = reference["video_ids"][name], mine["video_ids"][name]
        if expected != actual:
            missing = sorted(set(expected) - set(actual))[:3]
            extra = sorted(set(actual) - set(expected))[:3]
            differences.append(f"{name} video ids differ (missing e.g. {missing}, extra e.g. {extra})")
    return ("match" if not differences else "differ"), differences
