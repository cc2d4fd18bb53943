"""System errors a user can fix (a full disk, a closed pipe, a path too long, a read-only or forbidden place) as
one-line messages instead of tracebacks. Writers remove their temporary files on any error (fileio.py), so the
message is all that is left."""

from __future__ import annotations

import errno
import os
import sys


def _name(exc: OSError) -> str:
    name = exc.filename if exc.filename is not None else "a file"
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    return text if len(text) <= 100 else text[:70] + "..." + text[-20:]


def os_error_message(exc: BaseException) -> str | None:
    """The one-line message for a system error the user can fix, or None for any other (a bug: a traceback)."""
    if not isinstance(exc, OSError):
        return None
    code = exc.errno
    if code == errno.EPIPE:
        return ("the output was closed before everything was written to it (broken pipe); read the whole output, "
                "or write it to a file")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"{_name(exc)}: {exc.strerror or 'no space left on device'}; nothing half-written was kept: free "
                "space (or choose another output folder) and run the command again")
    if code == errno.ENAMETOOLONG:
        return f"{_name(exc)}: the path is too long ({exc.strerror}); choose a shorter path"
    if code == errno.EROFS:
        return f"{_name(exc)}: the file system is read-only; choose another output"
    if code in (errno.EACCES, errno.EPERM):
        return f"{_name(exc)}: permission denied; choose a path you may use"
    return None


def silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        handle = os.open(os.devnull, os.O_WRONLY)
        os.dup2(handle, sys.stdout.fileno())
        os.close(handle)
    except (OSError, ValueError, AttributeError):
        pass
