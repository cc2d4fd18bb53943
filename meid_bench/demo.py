"""The demo: the whole pipeline on a synthetic annotation set, so that a newcomer sees it run without downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split
from meid_bench.build.summary import summarize_split
from meid_bench.build.synthetic import write_synthetic_charades
from meid_bench.errors import MeidBenchError

DEMO_IMBALANCE = 20.0


def run_demo(out: Path, force: bool = False, echo: Callable[[str], None] = print) -> Path:
    out = Path(out)
    split_dir = out / "splits" / "charadeslt-demo"
    if split_dir.exists() and not force:
        raise MeidBenchError(f"{out}: holds an earlier demo; pass --force to replace it or --out to use another "
                             "folder")
    annotations = write_synthetic_charades(out / "annotations")
    echo(f"[1/1] synthetic Charades-format annotations in {annotations}; building a CharadesLT-style split")
    build_and_write(BuildOptions("charadeslt", imbalance=DEMO_IMBALANCE, val_per_class=10), annotations, split_dir,
                    force=force)
    echo(summarize_split(load_split(split_dir)))
    return split_dir
