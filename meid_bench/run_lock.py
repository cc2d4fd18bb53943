"""One writer per run folder: an exclusive lock file held for the whole time a command writes the folder.

``RUN/.meid-bench.lock`` holds the writer's pid, host, command and start time, and the writer holds an exclusive
``flock`` on it. The kernel drops that lock when the writer dies however it dies, so a lock file left by a killed
run (a dead pid) is stale by construction: the next writer takes it over (and says so). A second writer while the
first is alive gets a one-line error naming the first. Readers (report, diagnose) ask :func:`lock_holder` and refuse
a run that is being written. The file is removed when the lock is released.

The lock sits below training, evaluation and reports (it imports none of them).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from meid_bench.errors import MeidBenchError, warn

LOCK_NAME = ".meid-bench.lock"
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_ATTEMPTS = 5  # a reader's brief shared lock can make one attempt fail: a few tries, 50 ms apart


def lock_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / LOCK_NAME


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another meid-bench process"
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    command = holder.get("command") or "meid-bench"
    started = holder.get("started")
    return f"{command} (pid {pid} on {host}{f', started {started}' if started else ''})"


def _read_holder(handle: int) -> dict | None:
    try:
        os.lseek(handle, 0, os.SEEK_SET)
        record = json.loads(os.read(handle, 65536) or b"null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class RunLock:
    """A held run-folder lock; :meth:`release` (or leaving the ``with`` block) gives it back."""

    def __init__(self, folder: Path, handle: int, created: list[Path]) -> None:
        self.folder = folder
        self._handle: int | None = handle
        self._created = created  # folders this lock created, innermost last: removed again if left empty

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        """Remove the lock file (while still holding the lock, so no one takes over a file about to vanish), then
        the folders the lock created if nothing was written into them."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            mine = os.fstat(handle)
            now = os.stat(lock_path(self.folder))
            if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
                os.unlink(lock_path(self.folder))
        except OSError:
            pass
        finally:
            os.close(handle)
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only if empty: a refused command leaves nothing behind
            except OSError:
                break

    def __del__(self) -> None:  # a holder dropped without release (a Trainer never fitted): give the lock back
        try:
            self.release()
        except Exception:
            pass

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_run_lock(folder: str | os.PathLike, command: str, option: str = "--out") -> RunLock:
    """Take the lock of run folder ``folder`` (created, with its parents, if missing) for ``command`` (e.g.
    "meid-bench train"); a live holder is a MeidBenchError naming it, a dead holder's lock is taken over."""
    folder = Path(folder)
    created: list[Path] = []
    missing = folder
    while not missing.exists() and not missing.is_symlink() and missing != missing.parent:
        created.insert(0, missing)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    holder: dict | None = None
    for attempt in range(_ATTEMPTS):
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            _undo(created)
            raise MeidBenchError(f"{path}: cannot create the run folder's lock file ({exc.strerror}); choose another "
                                 f"{option}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(handle)
            os.close(handle)
            if exc.errno not in _BUSY:
                _undo(created)
                raise MeidBenchError(f"{path}: cannot lock the run folder ({exc.strerror}); choose another "
                                     f"{option} on a local file system") from None
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed the file as we opened it: lock the new one
            same = False
        if not same:
            os.close(handle)
            continue
        stale = _read_holder(handle)
        if stale is not None:  # we hold the lock, so its writer is gone (killed before it could remove the file)
            warn(f"{folder}: took over the lock left by {_describe(stale)}, which is no longer running")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "argv": sys.argv[:1] + sys.argv[1:20]}
        os.ftruncate(handle, 0)
        os.pwrite(handle, (json.dumps(record) + "\n").encode(), 0)
        return RunLock(folder, handle, created)
    _undo(created)
    raise MeidBenchError(f"{folder}: {_describe(holder)} is writing this run folder; wait for it to finish, or "
                         f"use another {option}")


def _undo(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def lock_holder(folder: str | os.PathLike) -> dict | None:
    """Who holds ``folder``'s run lock now ({} when the holder wrote nothing readable), or None when no live
    process holds it (no lock file, or one left by a process that died)."""
    path = lock_path(folder)
    try:
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(handle) or {}
        os.close(handle)
        return holder if exc.errno in _BUSY else None
    fcntl.flock(handle, fcntl.LOCK_UN)
    os.close(handle)
    return None


def refuse_if_locked(folder: str | os.PathLike, action: str) -> None:
    """A MeidBenchError when a live process is writing the run ``folder`` (``action``: what would be done)."""
    holder = lock_holder(folder)
    if holder is not None:
        raise MeidBenchError(f"{folder}: {_describe(holder)} is writing this run folder; {action} once it has "
                             "finished")
