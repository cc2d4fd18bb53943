"""Shipped references: what a rebuild of a default benchmark must reproduce, without shipping any label.

The Charades licence forbids redistributing labels, so the repository ships, per default build, only the video ids
of each split and the content hashes of the tables (``splits/expected/<benchmark>.json``). A rebuild on the real
files is compared to them; a match means the same videos, labels, segments and classes, byte for byte. The hashes
compared are always recomputed from the tables, never taken from the split's own manifest.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pyarrow as pa

from meid_bench.build.split_io import TABLES, VIDEO_TABLES, Split, table_content_sha256
from meid_bench.checks import Fields, loads_json
from meid_bench.errors import MeidBenchError

# The package data meid_bench.references: splits/expected/ of the repository, installed with the package.
REFERENCE_DIR = Path(str(importlib.resources.files("meid_bench.references")))


def reference_path(benchmark: str, reference_dir: Path = REFERENCE_DIR) -> Path:
    return reference_dir / f"{benchmark}.json"


def reference_record(manifest: dict, content_sha256: dict[str, str], rows: dict[str, int],
                     video_ids: dict[str, list[str]] | None, where: str = "manifest.json") -> dict:
    """The reference of one split: its identity (benchmark, protocol, parameters, sources) and, per table, its row
    count and content hash; the video ids of each subset unless ``video_ids`` is None."""
    fields = Fields(manifest, where, "a reference describes a split built by `meid-bench build`")
    reference = {
        "benchmark": fields.string("benchmark"),
        "protocol": fields.string("protocol"),
        "parameters": fields.object("parameters").data,
        "sources": [{"file": s["file"], "sha256": s["sha256"]} for s in manifest.get("sources", [])],
        "tables": {name: {"rows": rows[name], "content_sha256": content_sha256[name]} for name in TABLES},
    }
    if video_ids is not None:
        reference["video_ids"] = {name: list(video_ids[name]) for name in VIDEO_TABLES}
    return reference


def make_reference(split: Split, include_ids: bool = True) -> dict:
    """The reference of a loaded split, from the content hashes recomputed from its tables."""
    rows = {name: len(split.classes if name == "classes" else split.table(name)) for name in TABLES}
    ids = {name: split.table(name)["video_id"].tolist() for name in VIDEO_TABLES} if include_ids else None
    return reference_record(split.manifest, split.content_sha256, rows, ids, str(split.path / "manifest.json"))


def built_reference(manifest: dict, tables: dict[str, pa.Table], include_ids: bool = True) -> dict:
    """The reference of a split built in memory, before it is written (its manifest holds no ``files`` yet)."""
    hashes = {name: table_content_sha256(tables[name]) for name in TABLES}
    rows = {name: tables[name].num_rows for name in TABLES}
    ids = {name: tables[name].column("video_id").to_pylist() for name in VIDEO_TABLES} if include_ids else None
    return reference_record(manifest, hashes, rows, ids)


def load_reference(benchmark: str, reference_dir: Path = REFERENCE_DIR) -> dict | None:
    """The shipped reference of ``benchmark`` (fields checked), or None when none is shipped."""
    path = reference_path(benchmark, reference_dir)
    if not path.is_file():
        return None
    remedy = "reinstall meid-bench (the shipped reference is damaged)"
    try:
        data = loads_json(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise MeidBenchError(f"{path}: not a readable reference ({str(exc)[:120]}); {remedy}") from None
    fields = Fields(data, path, remedy)
    fields.string("benchmark")
    fields.string("protocol")
    fields.object("parameters")
    for source in fields.objects("sources"):
        source.string("file")
        source.sha256("sha256")
    tables = fields.object("tables")
    for name in TABLES:
        entry = tables.object(name)
        entry.integer("rows", low=0)
        entry.sha256("content_sha256")
    ids = fields.object("video_ids", None)
    if ids is not None:
        for name in VIDEO_TABLES:
            if not all(isinstance(v, str) for v in ids.list(name)):
                raise ids.fail(name, "expected a list of strings")
    return data


def compare_reference(mine: dict, reference: dict | None) -> tuple[str, list[str]]:
    """Compare a split's reference record with a shipped one: (status, differences).

    status is ``match``, ``differ``, ``not-applicable`` (other parameters or protocol than the reference's) or
    ``none`` (no reference shipped for this benchmark).
    """
    if reference is None:
        return "none", []
    if mine["parameters"] != reference["parameters"] or mine["protocol"] != reference["protocol"]:
        return "not-applicable", ["the split was built with other parameters than the shipped reference"]
    differences = []
    if mine["sources"] != reference["sources"]:
        differences.append("source files differ from the reference's (sha256): another release or edited files")
    for name in TABLES:
        ours, theirs = mine["tables"][name], reference["tables"][name]
        if ours["rows"] != theirs["rows"]:
            differences.append(f"table {name}: {ours['rows']} rows, the reference has {theirs['rows']}")
        elif ours["content_sha256"] != theirs["content_sha256"]:
            what = "labels, segments, durations or source columns" if name != "classes" else "class facts"
            differences.append(f"table {name}: same {ours['rows']} rows, other content ({what}; content_sha256 "
                               f"{ours['content_sha256'][:12]}, the reference has {theirs['content_sha256'][:12]})")
    for name in reference.get("video_ids", {}):
        expected, actual = reference["video_ids"][name], mine["video_ids"][name]
        if expected != actual:
            missing = sorted(set(expected) - set(actual))[:3]
            extra = sorted(set(actual) - set(expected))[:3]
            differences.append(f"{name} video ids differ (missing e.g. {missing}, extra e.g. {extra})"
                               if missing or extra else f"{name} video ids are in another order")
    return ("match" if not differences else "differ"), differences


def compare_to_reference(split: Split, reference_dir: Path = REFERENCE_DIR) -> tuple[str, list[str]]:
    """Compare a loaded split (its recomputed content hashes) with the shipped reference of its benchmark."""
    reference = load_reference(split.manifest["benchmark"], reference_dir)
    if reference is None:
        return "none", []
    return compare_reference(make_reference(split, include_ids="video_ids" in reference), reference)
