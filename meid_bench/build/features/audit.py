"""One pass over a feature store before training: its sha256 (recorded in run.json) and whether every frame value
is finite, remembered for large stores so that the runs of a sweep do not each read the whole file again.

A run needs both facts: the sha256 identifies the exact features a result came from, and a NaN or infinity in a
store changed or damaged after it was written would otherwise train and fail much later, blaming the predictions.
Both need every byte, so they share one sequential read: the file is hashed block by block, and the blocks that
hold the frame matrix (a contiguous store keeps it as one plain run of bytes at :attr:`FeatureStore.frames_offset`)
are tested for finiteness as they pass. A chunked store (no plain frame block) is hashed, then scanned.

At VideoLT scale (about 150 GB) one pass takes minutes, so the verdict of a store of at least
:data:`REMEMBER_BYTES` is remembered in a small JSON file under the user's cache folder (``$MEID_BENCH_CACHE``, else
``$XDG_CACHE_HOME/meid-bench``, else ``~/.cache/meid-bench``), keyed by the store's path, device, inode, size,
modification and status-change times: a write through ``write()`` changes the status-change time, which no user
command can set back, so such a changed store is always read again. A writer holding a writable memory map of the
file may leave both times unchanged until the kernel writes its pages back (and a coarse clock can give two writes
the same time), so the remembered verdict also carries a hash of a sample of the file (:func:`_sample_digest`: its
first and last MiB and blocks spread over it), recomputed on every use for a few MiB of reads: a change that shows
in the sample means a full read. A change through a memory map that touches no sampled block and neither time
goes unnoticed (docs/formats.md says how to force a full read). A cache that cannot be written is simply not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meid_bench.build.features.finite import BLOCK_BYTES, all_finite, find_non_finite
from meid_bench.errors import MeidBenchError

REMEMBER_BYTES = 1 << 30  # smaller stores are read again each run (about a second per GB from the page cache)
AUDIT_FORMAT = "meid-bench-store-audit"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreAudit:
    """The sha256 of a store file and the first (video position, frame) holding NaN or infinity, if any."""

    sha256: str
    non_finite: tuple[int, int] | None = None


def cache_dir() -> Path:
    if os.environ.get("MEID_BENCH_CACHE"):
        return Path(os.environ["MEID_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meid-bench"


def _identity(path: Path) -> dict:
    stat = os.stat(path)
    return {"path": str(path.resolve()), "device": stat.st_dev, "inode": stat.st_ino, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def _cache_file(identity: dict) -> Path:
    return cache_dir() / "store-audits" / f"{hashlib.sha256(identity['path'].encode()).hexdigest()[:32]}.json"


SAMPLE_EDGE = 1 << 20  # bytes hashed at each end of the file
SAMPLE_BLOCKS = 62  # blocks of SAMPLE_BLOCK bytes spread evenly between them
SAMPLE_BLOCK = 64 << 10


def _sample_digest(path: Path, size: int) -> str:
    """sha256 of a sample of the file: its first and last SAMPLE_EDGE bytes and SAMPLE_BLOCKS blocks spread evenly
    between (about 6 MiB read, whatever the file's size)."""
    digest = hashlib.sha256()
    starts = [0, max(0, size - SAMPLE_EDGE)]
    starts += [int(size * (k + 1) / (SAMPLE_BLOCKS + 1)) for k in range(SAMPLE_BLOCKS)]
    with open(path, "rb", buffering=0) as handle:
        for start in starts:
            handle.seek(start)
            digest.update(handle.read(SAMPLE_EDGE if start in starts[:2] else SAMPLE_BLOCK))
    return digest.hexdigest()


def _remembered(identity: dict) -> StoreAudit | None:
    try:
        record = json.loads(_cache_file(identity).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != AUDIT_FORMAT or record.get("identity") != identity:
        return None
    try:
        if record.get("sample_sha256") != _sample_digest(Path(identity["path"]), identity["size"]):
            return None  # changed without its times changing (a memory-mapped writer): read it all again
    except OSError:
        return None
    sha256 = record.get("sha256")
    if not (isinstance(sha256, str) and len(sha256) == 64 and record.get("finite") is True):
        return None  # only a clean verdict is remembered
    return StoreAudit(sha256)


def _remember(identity: dict, audit: StoreAudit) -> None:
    target = _cache_file(identity)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps({"format": AUDIT_FORMAT, "identity": identity, "sha256": audit.sha256,
                                       "finite": True,
                                       "sample_sha256": _sample_digest(Path(identity["path"]), identity["size"])}))
        os.replace(staging, target)
    except OSError:
        pass  # a read-only or full cache folder: the next run reads the store again


def _hash_and_scan(store) -> StoreAudit:
    """sha256 of the file; frames tested for finiteness in the same read when they are one plain block."""
    digest = hashlib.sha256()
    row_bytes = store.dim * store.dtype.itemsize
    total_rows = int(store.offsets[-1])
    frames_start = store.frames_offset
    frames_stop = None if frames_start is None else frames_start + total_rows * row_bytes
    block_bytes = max(row_bytes, BLOCK_BYTES // row_bytes * row_bytes)
    first_bad_row = None
    with open(store.path, "rb", buffering=0) as handle:
        position = 0
        while True:
            # Reads stop at the frame block's edges, so every block inside it holds whole rows.
            size = block_bytes
            if frames_start is not None and position < frames_start:
                size = min(size, frames_start - position)
            block = handle.read(size)
            if not block:
                break
            digest.update(block)
            if (first_bad_row is None and frames_start is not None
                    and frames_start <= position < frames_stop):
                usable = min(len(block), frames_stop - position) // row_bytes * row_bytes
                values = np.frombuffer(block, dtype=store.dtype.newbyteorder("<"), count=usable // store.dtype.itemsize)
                if not all_finite(values):
                    rows = values.reshape(-1, store.dim)
                    first_bad_row = (position - frames_start) // row_bytes + int(
                        np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            position += len(block)
    if frames_start is None:
        return StoreAudit(digest.hexdigest(), find_non_finite(store))
    if first_bad_row is None:
        return StoreAudit(digest.hexdigest())
    video = int(np.searchsorted(store.offsets, first_bad_row, side="right") - 1)
    return StoreAudit(digest.hexdigest(), (video, first_bad_row - int(store.offsets[video])))


def audit_store(store, remember_bytes: int = REMEMBER_BYTES) -> StoreAudit:
    """The store's sha256 and first non-finite value, read in one pass (or remembered; see the module doc)."""
    path = Path(store.path)
    identity = _identity(path)
    if identity["size"] >= remember_bytes:
        known = _remembered(identity)
        if known is not None:
            logger.debug(f"{path}: sha256 {known.sha256[:12]}... and finite frames remembered from an earlier run")
            return known
    started = time.perf_counter()
    audit = _hash_and_scan(store)
    logger.debug(f"{path}: sha256 {audit.sha256[:12]}... and frame check in one read, "
                 f"{time.perf_counter() - started:.1f}s")
    if audit.non_finite is None and identity["size"] >= remember_bytes and _identity(path) == identity:
        _remember(identity, audit)
    return audit


def check_audit_finite(store, audit: StoreAudit) -> None:
    """Refuse a store whose audit found NaN or infinity, naming the video and frame."""
    if audit.non_finite is None:
        return
    video, frame = audit.non_finite
    value = store.read_at(video)[frame]
    bad = value[~np.isfinite(value)][0]
    raise MeidBenchError(f"{store.path}: video {store.video_ids[video]!r}, frame {frame} holds {bad} (features "
                         "must be finite; the store was changed or damaged after it was written): pack or "
                         "simulate the features again")
