"""The JSON records of a run folder, checked field by field whenever they are read: ``run.json``,
``metrics.json`` (and ``metrics_val.json``) and ``log.jsonl`` (``docs/formats.md`` lists their fields).

A field of the wrong type, a NaN or infinity, a mean AP outside [0, 1] or a per-class list of the wrong length is
one MeidBenchError naming the file and the field; unknown extra fields are allowed (newer versions add some). A
``log.jsonl`` whose last line was cut off by a killed run loses that line with a warning; any other bad line is an
error naming its line number.
"""

from __future__ import annotations

from pathlib import Path

from meid_bench.checks import Fields, loads_json
from meid_bench.errors import MeidBenchError, warn

GROUPS = ("head", "medium", "tail")
_RECORD_START = b'{"epoch": '  # how every line of log.jsonl begins


def check_run_record(record: dict, path: Path) -> Fields:
    """Check the fields of a parsed run.json (``format``/``format_version`` checked by the reader)."""
    fields = Fields(record, path, "the run record is damaged; train the run again")
    fields.string("name", None)
    fields.string("method", None)
    fields.integer("seed", None, allow_none=True)
    split = fields.object("split")
    split.string("path", nonempty=True)
    split.sha256("checksum")
    split.string("benchmark", None)
    fields.object("recipe", {})
    features = fields.object("features", None)
    if features is not None:
        features.string("path", None)
        features.integer("dim", None, low=1)
        features.boolean("simulated", None)
    fields.integer("world_size", None, low=1)
    return fields


def shown_epoch(index: int | None) -> int | None:
    """The number people see for an epoch stored as ``index``: files (log.jsonl's ``epoch``, metrics.json's
    ``best_epoch``, checkpoints) store the 0-based index, every person-facing output (console, report, results.csv,
    ``--json``, ``load_run``) counts from 1 (docs/formats.md, "Epoch numbers")."""
    return None if index is None else int(index) + 1


def check_metrics_record(record: dict, path: Path, num_classes: int | None = None) -> Fields:
    """Check the fields of a parsed metrics.json: the means and per-class APs are null or finite numbers in [0, 1],
    counts are integers >= 0, ``per_class_ap`` has one entry per class (``num_classes`` when given)."""
    fields = Fields(record, path, "evaluate the run again with --force")
    fields.string("benchmark", None)
    fields.sha256("split_checksum")
    fields.string("subset", choices=("train", "val", "test"))
    fields.string("score_scale", None)
    total = fields.integer("num_classes", None, low=1)
    fields.integer("num_videos", None, low=0)
    for key in ("mAP",) + tuple(f"mAP_{g}" for g in GROUPS):
        fields.number(key, low=0.0, high=1.0, allow_none=True)
    for key in ("top1", "top5"):
        fields.number(key, None, low=0.0, high=1.0, allow_none=True)
    for key in ("classes_evaluated", "classes_without_positives"):
        fields.integer(key, None, low=0)
        for group in GROUPS:
            fields.integer(f"{key}_{group}", None, low=0)
    for key in ("topk_videos_evaluated", "videos_without_labels"):
        fields.integer(key, None, low=0)
    fields.integer("best_epoch", None, low=0)
    expected = num_classes if num_classes is not None else total
    fields.numbers("per_class_ap", length=expected, low=0.0, high=1.0, allow_none=True)
    return fields


def read_log(path: Path, warn_cut_line: bool = True) -> list[dict]:
    """The records of a ``log.jsonl`` (one JSON object per epoch, ``epoch`` an integer >= 0).

    A last line without its newline that does not parse is what a run killed mid-write leaves: it is dropped, with
    a warning unless ``warn_cut_line`` is False. Any other line that is not such an object is an error.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MeidBenchError(f"{path}: cannot be read ({exc.strerror}); the run folder is damaged") from None
    lines = raw.split(b"\n")
    cut = lines.pop()  # b"" when the file ends with a newline, else the unfinished last line
    records = []
    for number, line in enumerate(lines, start=1):
        records.append(_log_record(line, path, number))
    if cut:
        try:
            records.append(_log_record(cut, path, len(lines) + 1))
        except MeidBenchError:
            # Only the start of a record, as training writes it, can be a cut-off line; anything else is damage.
            if not (cut.startswith(_RECORD_START) or _RECORD_START.startswith(cut)):
                raise
            if warn_cut_line:
                warn(f"{path}: line {len(lines) + 1} was cut off (an interrupted run) and is dropped")
    return records


def _log_record(line: bytes, path: Path, number: int) -> dict:
    where = f"{path}: line {number}"
    try:
        record = loads_json(line)
    except (ValueError, RecursionError) as exc:
        raise MeidBenchError(f"{where}: not a JSON object ({str(exc)[:120]}); the run log is damaged, start the run "
                             "again in a new folder") from None
    fields = Fields(record, where, "the run log is damaged, start the run again in a new folder")
    fields.integer("epoch", low=0)
    for key, value in record.items():
        if key.startswith(("loss_", "val_")) or key in ("lr", "train_seconds"):
            fields.number(key, allow_none=True)
    return record
