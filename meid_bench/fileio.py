"""File I/O every part shares: outputs checked before any work and written so that nothing is ever half-written (a
temporary sibling first, then one rename), and self-describing JSON records (a ``format`` name and
``format_version``) read with clear errors."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from meid_bench.checks import loads_json
from meid_bench.errors import MeidBenchError, warn


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
    write_text_atomic(path, json.dumps(payload, indent=indent, allow_nan=False) + "\n")


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
        record = loads_json(path.read_bytes() if raw is None else raw)
    except OSError as exc:
        raise MeidBenchError(f"{path}: cannot be read ({exc.strerror}); {remedy}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MeidBenchError(f"{path}: not valid JSON ({str(exc)[:200]}); {remedy}") from None
    if not isinstance(record, dict) or record.get("format") != kind:
        raise MeidBenchError(f"{path}: field 'format' is not {kind!r}; {remedy}")
    if version is not None and record.get("format_version") != version:
        raise MeidBenchError(f"{path}: field 'format_version' is {record.get('format_version')!r}, this meid-bench "
                             f"reads version {version}; {remedy}")
    return record


# -- outputs, checked up front -------------------------------------------------------------------------------------


def _check_parents(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder we may write in."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise MeidBenchError(f"{path}: {parent} is a file, not a folder; choose another {option}")
    if not parent.exists():
        raise MeidBenchError(f"{path}: {parent} is a broken link; choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MeidBenchError(f"{path}: no permission to write in {parent}; choose another {option}")


def check_output_file(path: str | os.PathLike, force: bool, option: str = "--out") -> Path:
    """Refuse, before any work, an output file that cannot or may not be written: a folder in its place, a file
    among its parents, an existing file without ``force``. Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise MeidBenchError(f"{path}: is a folder, {option} names a file to write; choose a file name")
    _check_parents(path, option)
    if path.exists() and not force:
        raise MeidBenchError(f"{path}: the output file already exists; pass --force to replace it or choose "
                             f"another {option}")
    return path


def check_output_folder(path: str | os.PathLike, force: bool, option: str = "--out", *,
                        existing_ok: bool = False) -> Path:
    """Refuse, before any work, an output folder that cannot or may not be written: a file in its place or among
    its parents, an existing folder without ``force`` (unless ``existing_ok``: files are added into it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MeidBenchError(f"{path}: is a file, {option} names a folder; choose another {option}")
    _check_parents(path, option)
    if path.is_dir() and not existing_ok and not force:
        raise MeidBenchError(f"{path}: the output folder already exists; pass --force to replace it or choose "
                             f"another {option}")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise MeidBenchError(f"{path}: no permission to write in this folder; choose another {option}")
    return path


def check_free_space(path: str | os.PathLike, nbytes: float, remedy: str) -> None:
    """Refuse, before writing, an output of ``nbytes`` that the file system holding ``path`` has no room for."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if not nbytes <= free:  # also refuses a size that is not a finite number
        raise MeidBenchError(f"{path}: would take {nbytes:.3g} bytes, {folder} has {free:.3g} bytes free; {remedy}")


# -- staging files of interrupted writers ----------------------------------------------------------------------------


def staging_prefix(path: Path) -> str:
    """The name prefix of ``path``'s temporary siblings: ``.<name>.tmp-``."""
    return f".{path.name}.tmp-"


def create_staging_file(path: Path, suffix: str = "") -> Path:
    """A new, empty temporary sibling of ``path`` (see :func:`staging_prefix`), for a writer that renames it onto
    ``path`` when complete. The writer must hold an exclusive ``flock`` on it while writing (HDF5 does so on every
    file it writes): that is how :func:`remove_stale_staging` tells a live writer's file from a killed one's."""
    handle, staging = tempfile.mkstemp(prefix=staging_prefix(path), suffix=suffix, dir=path.parent)
    os.close(handle)
    return Path(staging)


def remove_stale_staging(path: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Delete the temporary siblings of ``path`` left by writers that were killed: files named exactly as
    :func:`create_staging_file` names them (``.<name>.tmp-XXXXXXXX<suffix>``) that no running writer holds
    locked (a lock we can take ourselves means no writer). Nothing else is touched. Returns the removed paths
    (and warns about them)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(staging_prefix(path)) + r"[A-Za-z0-9_]{8}" + re.escape(suffix))
    removed = []
    for entry in os.scandir(path.parent):
        if not pattern.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            handle = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(handle)
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(handle)
    if removed:
        warn(f"removed {len(removed)} temporary file(s) left by an interrupted write of {path} "
             f"({', '.join(p.name for p in removed[:3])})")
    return removed
