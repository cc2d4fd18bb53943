"""The `meid-bench` command line: a click group whose commands live one area per module and call the library.

Every command turns :class:`~meid_bench.errors.MeidBenchError` into a one-line message and its exit status (2 for
bad input, 1 for a verification mismatch); library warnings go to stderr as ``meid-bench: warning: ...``.
"""

from __future__ import annotations

import logging
import sys

import click

from meid_bench import __version__
from meid_bench.errors import MeidBenchError, logger


class _StderrWarnings(logging.Handler):
    """Library warnings as one stderr line each (through click, so that test runners capture them)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"meid-bench: warning: {record.getMessage()}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        if not logger.handlers:
            logger.addHandler(_StderrWarnings(logging.WARNING))
            logger.propagate = False
        try:
            return super().invoke(ctx)
        except MeidBenchError as exc:
            click.echo(f"meid-bench: error: {exc}", err=True)
            sys.exit(exc.exit_status)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="meid-bench")
def main() -> None:
    """Long-tailed multi-label video recognition: build benchmarks, train reference models, evaluate, report.

    \b
    Examples:
      meid-bench demo
      meid-bench build charadeslt --annotations data/charades --imbalance 100
      meid-bench features synth --split splits/charadeslt
      meid-bench train --split splits/charadeslt
      meid-bench report
    """


# Command registration: one line per area module.
from meid_bench.cli import build as _build  # noqa: E402

main.add_command(_build.build)
main.add_command(_build.verify)
main.add_command(_build.demo)

from meid_bench.cli import evaluate as _evaluate  # noqa: E402

main.add_command(_evaluate.evaluate)
main.add_command(_evaluate.report)

from meid_bench.cli import features as _features  # noqa: E402

main.add_command(_features.features)

from meid_bench.cli import train as _train  # noqa: E402

main.add_command(_train.train)
main.add_command(_train.sweep)
