"""The demo: the whole pipeline on a synthetic annotation set, so that a newcomer sees it run without downloads.

synthetic Charades-format annotations -> CharadesLT-style split -> proxy features -> MEID and the late-averaging
baseline (a short CPU schedule) -> test metrics -> report. Everything lands under one folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from meid_bench.build.features.synth import SynthConfig, synthesize_features
from meid_bench.build.protocol import BuildOptions, build_and_write
from meid_bench.build.split_io import load_split
from meid_bench.build.summary import summarize_split
from meid_bench.build.synthetic import write_synthetic_charades
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import check_output_folder, write_json_atomic
from meid_bench.outputs import check_path_usable, has_json_format

DEMO_IMBALANCE = 20.0
DEMO_RECIPES = ("meid", "late_avg")
# A short schedule for two CPU cores; the recipes' own values are the reference defaults for real features.
DEMO_OVERRIDES = ("epochs=12", "batch_size=64", "optim.lr=3e-3", "optim.milestones=[9]", "data.train_frames=16",
                  "data.eval_frames=32")
DEMO_FEATURES = SynthConfig(dim=64, fps=2.0)
DEMO_PARTS = ("annotations", "splits", "runs", "report")
DEMO_MARKER = "demo.json"  # written first: how a later `demo --force` knows the parts as the demo's own
DEMO_FORMAT = "meid-bench-demo"

logger = logging.getLogger(__name__)


def _is_demo(out: Path) -> bool:
    return has_json_format(out / DEMO_MARKER, DEMO_FORMAT)


def run_demo(out: Path, force: bool = False) -> Path:
    """Run the demo into ``out``; returns the report folder. Progress is logged (``meid_bench.demo``)."""
    from meid_bench.report.assemble import write_report
    from meid_bench.train.loop import TrainOptions, train

    out = check_output_folder(out, force, existing_ok=True)
    earlier = [out / part for part in DEMO_PARTS if (out / part).exists() or (out / part).is_symlink()]
    if earlier and not force:
        raise MeidBenchError(f"{out}: holds an earlier demo; pass --force to replace it or --out to use another "
                             "folder")
    if earlier and not _is_demo(out):  # --force replaces only what the demo wrote (outputs.py's rule)
        raise MeidBenchError(f"{out}: holds {', '.join(p.name for p in earlier)} but no {DEMO_MARKER} (not written by "
                             "`meid-bench demo`); --force replaces only the demo's own folders: choose another --out")
    for path in earlier:  # only the demo's own folders are replaced
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    check_path_usable(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / DEMO_MARKER, {"format": DEMO_FORMAT, "format_version": 1, "parts": list(DEMO_PARTS)})

    annotations = write_synthetic_charades(out / "annotations")
    logger.info(f"[1/5] synthetic Charades-format annotations written to {annotations} (generated, not Charades "
                "data)")
    split_dir = build_and_write(BuildOptions("charadeslt", imbalance=DEMO_IMBALANCE, val_per_class=10), annotations,
                                out / "splits" / "charadeslt-demo")
    split = load_split(split_dir)
    logger.info(f"[2/5] built a CharadesLT-style split (protocol v1, IF {DEMO_IMBALANCE:g}):\n"
                f"{summarize_split(split)}")
    store = synthesize_features(split, split_dir / "features.h5", DEMO_FEATURES)
    logger.info(f"[3/5] simulated proxy features: {store}")
    runs = []
    for recipe in DEMO_RECIPES:
        logger.info(f"[4/5] training {recipe} on the CPU ({', '.join(DEMO_OVERRIDES)})")
        runs.append(train(TrainOptions(split=split_dir, recipe=recipe, out=out / "runs" / recipe, device="cpu",
                                       overrides=DEMO_OVERRIDES)))
    report = write_report(runs, out / "report")
    logger.info(f"[5/5] report written: {report / 'index.html'} (tables: {report / 'results.md'})")
    return report
