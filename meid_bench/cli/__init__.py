"""The `meid-bench` command line: a click group whose commands live one area per module and call the library.

Every command turns :class:`~meid_bench.errors.MeidBenchError` into a one-line message and its exit status (2 for
bad input, 1 for a verification mismatch). Messages (progress, notes, warnings) are logged and go to stderr
(``-v`` / ``-q`` on the group); stdout holds only what a command produces, and with ``--json`` exactly one JSON
object.
"""

from __future__ import annotations

import errno
import sys

import click

from meid_bench._version import __version__
from meid_bench.cli.oserrors import os_error_message, silence_stdout
from meid_bench.errors import MeidBenchError
from meid_bench.logs import configure_cli_logging


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MeidBenchError as exc:
            click.echo(f"meid-bench: error: {exc}", err=True)
            sys.exit(exc.exit_status)
        except OSError as exc:  # a full disk, a closed pipe, a path too long: the user's to fix, no traceback
            message = os_error_message(exc)
            if message is None:
                raise
            if exc.errno == errno.EPIPE:
                silence_stdout()
            click.echo(f"meid-bench: error: {message}", err=True)
            sys.exit(2)
        except ValueError as exc:  # what os functions (and click's path checks) raise for a NUL byte in a path
            if "embedded null byte" not in str(exc):
                raise
            click.echo("meid-bench: error: a path given contains a NUL byte; no file can be named so, choose "
                       "another path", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="meid-bench")
@click.option("-v", "--verbose", count=True, help="More messages on stderr (-v: debug messages too).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def main(verbose: int, quiet: bool) -> None:
    """Long-tailed multi-label video recognition: build benchmarks, train reference models, evaluate, report.

    Messages go to stderr; results to stdout (`--json` on build, verify, evaluate and train prints one JSON
    object there and nothing else).

    \b
    Examples:
      meid-bench demo
      meid-bench build charadeslt --annotations data/charades --imbalance 100
      meid-bench features synth --split splits/charadeslt
      meid-bench train --split splits/charadeslt
      meid-bench -q train --split splits/charadeslt --json > result.json
      meid-bench report
    """
    click.get_current_context().call_on_close(configure_cli_logging(-1 if quiet else verbose))


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

from meid_bench.cli import recipes as _recipes  # noqa: E402

main.add_command(_recipes.recipes)

from meid_bench.cli import diagnose as _diagnose  # noqa: E402

main.add_command(_diagnose.diagnose)
