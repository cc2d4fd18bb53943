"""Run folders: their format (run.json, predictions, metrics.json), the writing of run.json, and how evaluation,
reports and diagnose read them.

A run folder (written by training, see ``docs/evaluation.md``) holds ``run.json``, ``predictions/val.parquet``,
``predictions/test.parquet`` and, once evaluated, ``metrics.json``. Every reader here checks that the split found
through run.json is the one the run was made on (its checksum), so numbers never mix splits.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from meid_bench.build.split_io import Split, load_split
from meid_bench.errors import MeidBenchError
from meid_bench.evaluator import METRICS_FORMAT, Evaluator, read_predictions
from meid_bench.fileio import read_record, write_json_atomic
from meid_bench.records import check_metrics_record, check_run_record

RUN_FORMAT = "meid-bench-run"
RUN_FORMAT_VERSION = 1
FEATURE_KINDS = ("real", "simulated", "unknown")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """What run.json says about a run (``record`` is the whole file)."""

    path: Path
    name: str
    method: str
    seed: int | None
    split_path: str
    split_checksum: str
    benchmark: str
    recipe: dict
    record: dict = field(repr=False)

    def predictions_path(self, subset: str = "test") -> Path:
        return self.path / "predictions" / f"{subset}.parquet"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def features_kind(self) -> str:
        """``simulated`` (proxy features from ``features synth``), ``real`` (packed from an extractor), or
        ``unknown`` (a run.json that does not say)."""
        features = self.record.get("features")
        simulated = features.get("simulated") if isinstance(features, dict) else None
        return "unknown" if not isinstance(simulated, bool) else "simulated" if simulated else "real"


def write_run_record(run_dir: str | os.PathLike, fields: dict, command: list[str], resumed: bool = False) -> Path:
    """Write ``RUN/run.json`` (atomically): the format marker, the run's name (its folder's), ``fields`` (method,
    seed, split, features, recipe, software, ...) and the command line. A resumed run keeps the command that
    started it and appends this one to ``resumed_with``."""
    path = Path(run_dir) / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    commands: dict = {"command_line": command}
    if resumed and path.is_file():
        earlier = json.loads(path.read_text())
        if isinstance(earlier.get("command_line"), list):
            commands = {"command_line": earlier["command_line"],
                        "resumed_with": [*earlier.get("resumed_with", []), command]}
    write_json_atomic(path, {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "name": path.parent.name,
                             **fields, **commands})
    return path


def read_run(run_dir: str | os.PathLike) -> Run:
    """Read and check ``RUN_DIR/run.json``."""
    path = Path(run_dir)
    if not path.is_dir():
        raise MeidBenchError(f"{path}: no such run folder; pass a folder written by `meid-bench train`")
    run_json = path / "run.json"
    if not run_json.is_file():
        raise MeidBenchError(f"{run_json}: missing; {path} is not a run folder (an empty or unfinished run?), "
                             "train it again or pass another folder")
    record = read_record(run_json, RUN_FORMAT, RUN_FORMAT_VERSION, "not a complete meid-bench run; train it again")
    fields = check_run_record(record, run_json)
    split = fields.data["split"]
    return Run(path=path, name=record.get("name") or path.name, method=record.get("method", "?"),
               seed=record.get("seed"), split_path=split["path"], split_checksum=split["checksum"],
               benchmark=split.get("benchmark", "?"), recipe=record.get("recipe", {}), record=record)


def find_runs(runs_root: str | os.PathLike) -> list[Path]:
    """Every folder directly under ``runs_root`` that holds a run.json, sorted by name."""
    root = Path(runs_root)
    if not root.is_dir():
        raise MeidBenchError(f"{root}: no such runs folder; train a run first or pass RUN_DIR arguments")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "run.json").is_file())


def locate_split(run: Run, override: str | os.PathLike | None = None) -> Path:
    """The split folder of a run: ``override`` if given, else run.json's path (absolute, or relative to the
    working folder, to the run folder, or to the folder that holds the runs folder, in that order)."""
    if override is not None:
        return Path(override)
    recorded = Path(run.split_path)
    if recorded.is_absolute():
        return recorded
    for base in (Path.cwd(), run.path, run.path.parent.parent):
        if (base / recorded).is_dir():
            return base / recorded
    raise MeidBenchError(f"{run.path / 'run.json'}: split.path: {run.split_path!r} was not found (looked in the "
                         f"working folder, {run.path} and {run.path.parent.parent}); pass --split DIR")


def load_run_split(run: Run, override: str | os.PathLike | None = None,
                   cache: dict[Path, Split] | None = None) -> Split:
    """Load the run's split and check that its checksum is the one in run.json."""
    path = locate_split(run, override)
    key = path.resolve()
    split = cache.get(key) if cache is not None else None
    if split is None:
        split = load_split(path)
        if cache is not None:
            cache[key] = split
    if not split.matches(run.split_checksum):
        raise MeidBenchError(f"{run.path / 'run.json'}: split.checksum {run.split_checksum[:12]}... does not match "
                             f"the split folder {path} ({split.checksum[:12]}...): the run was made on another "
                             "split or the split was rebuilt; evaluate with the split the run was trained on")
    return split


def evaluate_run(run: Run, split: Split, subset: str = "test") -> tuple[dict, Evaluator]:
    """Score ``predictions/<subset>.parquet`` of a run against its (already checked) split."""
    source = run.predictions_path(subset)
    if not source.is_file():
        raise MeidBenchError(f"{source}: missing; the run has no {subset} predictions (did training finish?)")
    evaluator = Evaluator(split, subset)
    video_ids, scores = read_predictions(source, evaluator.class_keys)
    return evaluator.eval(video_ids, scores, source=str(source)), evaluator


def rescore_run(run: Run, split: Split, subset: str = "test", force: bool = False) -> tuple[dict, Evaluator, list[str]]:
    """Score a run's predictions again for the run folder's own metrics file (``metrics.json``, or
    ``metrics_val.json`` for val), keeping every field the existing file has that the evaluation does not compute
    (training's ``best_epoch``, ...). Returns the result to write, the evaluator and the names of the kept fields.

    The existing metrics file is this run's (written by training or an earlier ``evaluate``): it must be a metrics
    record of the run's split and subset, else it is refused unless ``force`` (then nothing of it is kept), so a
    file that is not the run's is never silently replaced. An existing per-class CSV must have the columns
    ``evaluate`` writes, likewise.
    """
    from meid_bench.evaluator import metrics_paths

    metrics_path, per_class_path = metrics_paths(run.path, subset)
    previous: dict = {}
    if metrics_path.exists():
        try:
            previous = read_metrics(metrics_path, split, subset)
        except MeidBenchError:
            if not force:
                raise
    result, evaluator = evaluate_run(run, split, subset)
    if per_class_path.exists() and not force:
        with open(per_class_path, "rb") as handle:  # the header line is enough to tell
            header = handle.read(4096).split(b"\n", 1)[0].decode("utf-8", "replace")
        if header.split(",") != list(evaluator.per_class(result).columns):
            raise MeidBenchError(f"{per_class_path}: exists and is not a per-class file that `meid-bench evaluate` "
                                 "wrote; move it away or pass --force to replace it")
    kept = [key for key in previous if key not in result]
    result.update({key: previous[key] for key in kept})
    return result, evaluator, kept


def run_test_metrics(run: Run, split: Split) -> dict:
    """The run's test metrics: its metrics.json (checked against the split), else computed from its predictions."""
    if run.metrics_path.is_file():
        return read_metrics(run.metrics_path, split)
    if run.predictions_path("test").is_file():
        return evaluate_run(run, split, "test")[0]
    raise MeidBenchError(f"{run.path}: neither metrics.json nor predictions/test.parquet; the run is unfinished, "
                         "train it again or leave it out")


def run_val_metrics(run: Run, split: Split) -> dict | None:
    """The run's validation metrics (metrics_val.json, else computed from predictions/val.parquet), or None for a
    run that has neither (validation chooses the best method of a report; without it there is no choice)."""
    path = run.path / "metrics_val.json"
    if path.is_file():
        return read_metrics(path, split, subset="val")
    if run.predictions_path("val").is_file():
        return evaluate_run(run, split, "val")[0]
    return None


def read_training_log(run: Run) -> list[dict]:
    """The epochs of ``log.jsonl`` (empty without one). A line that is not a JSON object, such as the last line
    of an interrupted run, is skipped with a warning: curves are a view, not a result."""
    path = run.path / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            logger.warning(f"{path}: line {number} is not an epoch record; left out of the curves")
            continue
        records.append(record)
    return records


def read_metrics(path: Path, split: Split, subset: str = "test") -> dict:
    """Read a metrics file written by ``meid-bench evaluate`` or training, checking its split and subset."""
    metrics = read_record(path, METRICS_FORMAT, None, "evaluate the run again with --force")
    check_metrics_record(metrics, path, split.num_classes)
    if not split.matches(metrics["split_checksum"]):
        raise MeidBenchError(f"{path}: split_checksum does not match the run's split {split.path}; the metrics are "
                             "from another split, evaluate the run again with --force")
    if metrics["subset"] != subset:
        raise MeidBenchError(f"{path}: subset is {metrics['subset']!r}, expected {subset!r}; evaluate the run "
                             f"again with --subset {subset} --force")
    return metrics
