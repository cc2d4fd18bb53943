"""Logging: every module logs to ``logging.getLogger(__name__)``, all under the ``meid_bench`` logger.

The library itself installs no output (only a NullHandler, as libraries should): a script sees meid-bench's
messages once it configures logging, e.g. ``logging.basicConfig(level=logging.INFO)``. The command line sends
them to stderr (:func:`configure_cli_logging`; ``-v`` adds debug messages, ``-q`` keeps only warnings and
errors), so that stdout holds only a command's results (one JSON object with ``--json``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

LOGGER_NAME = "meid_bench"
logger = logging.getLogger(LOGGER_NAME)


class _ClickStderrHandler(logging.Handler):
    """Writes through click to the current stderr (so CliRunner and a redirected stderr both get the lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"meid-bench: {record.levelname.lower()}: {message}"
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {message}"
        return message


def progress_wanted() -> bool:
    """Whether a command draws progress bars: at a terminal, unless ``-q`` keeps only warnings."""
    return sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)


class _NoBar:
    """What :func:`progress_bar` gives when no bar is wanted: the bar's ``update``, doing nothing."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, steps: int, current_item: object = None) -> None:
        return None


def progress_bar(length: int, label: str, show_eta: bool = False) -> object:
    """A click progress bar on stderr of ``length`` steps when :func:`progress_wanted`, else one that draws nothing
    (click's own ``hidden=`` needs click 8.2; this works from click 8.1 on)."""
    if not progress_wanted():
        return _NoBar()
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True, show_eta=show_eta)


def configure_cli_logging(verbosity: int) -> Callable[[], None]:
    """Route the ``meid_bench`` logger to stderr for one command: ``verbosity`` -1 (``-q``): warnings and errors,
    0: information too, 1 or more (``-v``): debug messages too. Returns the function that puts the logger back as
    it was (the CLI calls it when the command ends, so an in-process call leaves no handler behind)."""
    handler = _ClickStderrHandler()
    handler.setFormatter(_CliFormatter())
    previous = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)
    logger.propagate = False  # the command line prints each message once, whatever the root logger does

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]

    return restore


class _CallbackHandler(logging.Handler):
    def __init__(self, callback: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        self.callback(record.getMessage())


@contextmanager
def log_lines_to(callback: Callable[[str], None] | None) -> Iterator[None]:
    """While the block runs, also pass each ``meid_bench`` message of level INFO or above to ``callback`` (a
    no-op for None): for callers that collect a run's lines, such as tests."""
    if callback is None:
        yield
        return
    handler = _CallbackHandler(callback)
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
