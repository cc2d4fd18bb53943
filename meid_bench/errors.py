"""The error types for bad user input, and the one way library code warns.

Library code raises :class:`MeidBenchError` with a message that names the file, the line or field, what is wrong
and how to fix it. The command line prints that message on one line and exits with the error's ``exit_status``:
2 for bad input (the default), 1 for :class:`VerificationError`, data that is well formed but does not match its
own record (a checksum or content hash) or the shipped reference - what scripts and CI test for. Neither prints a
traceback: a traceback means a bug in meid-bench.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("meid_bench")


class MeidBenchError(Exception):
    """Bad input from the user (a file, an option, a folder): the message says what and how to fix it."""

    exit_status = 2


class VerificationError(MeidBenchError):
    """Well-formed data that does not match its checksum, its content hash or the shipped reference."""

    exit_status = 1


def warn(message: str) -> None:
    """A warning for the user (stderr on the command line): something they should know that is not an error."""
    logger.warning(message)
