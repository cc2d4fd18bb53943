"""File I/O every part shares: outputs written so that nothing is ever half-written (a temporary sibling first, then
one rename), and self-describing JSON records (a ``format`` name and ``format_version``) read with clear errors."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from meid_bench.errors import MeidBenchError


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary sibling file, then rename it onto ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(staging, 0o644)  # mkstemp makes owner-only files; outputs are for everyone to read
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, payload: object, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(payload, indent=indent) + "\n")


def publish_folder(staging: Path, out: Path) -> None:
    """Move a completely written ``staging`` folder to ``out``, replacing an existing ``out`` only at the end."""
    os.chmod(staging, 0o755)
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired)
    else:
        os.replace(staging, out)


def read_record(path: Path, kind: str, version: int | None, remedy: str, raw: bytes | None = None) -> dict:
    """A JSON object whose ``format`` is ``kind`` (and ``format_version`` is ``version`` unless None); anything
    else is a MeidBenchError naming the file and ending with ``remedy`` (what the user should do)."""
    try:
        record = json.loads(path.read_bytes() if raw is None else raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MeidBenchError(f"{path}: not valid JSON ({exc}); {remedy}") from None
    if not isinstance(record, dict) or record.get("format") != kind:
        raise MeidBenchError(f"{path}: field 'format' is not {kind!r}; {remedy}")
    if version is not None and record.get("format_version") != version:
        raise MeidBenchError(f"{path}: field 'format_version' is {record.get('format_version')!r}, this meid-bench "
                             f"reads version {version}; {remedy}")
    return record
