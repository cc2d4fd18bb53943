"""What commands print on stdout: their results, as text or, with ``--json``, as exactly one JSON object."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object on stdout and nothing else there (messages stay on stderr).")


def echo_json(payload: dict) -> None:
    """Print ``payload`` as one JSON document (paths as strings, NaN as null) on stdout."""
    click.echo(json.dumps(_plain(payload), indent=2, allow_nan=False))


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item())
    return value
