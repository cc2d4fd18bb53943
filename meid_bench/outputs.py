"""The one rule for outputs, checked by every command before any work.

1. An output may not be, contain, or lie inside any of the command's inputs (annotations, a split's files, a
   feature store, run folders, recipe and weight files) - with or without ``--force``. The single exception is
   what the command was asked to update: ``evaluate --run RUN`` rewrites RUN's own metrics files (an input's
   ``updatable`` entries), nothing else of RUN.
2. ``--force`` replaces only an output the command itself wrote before, recognised by its format marker (a split's
   manifest.json, a run's run.json, a report's report.json, a store's ``format`` attribute, a record's ``format``
   field): never a file or folder of another kind.
3. Paths the system cannot take (a name over 255 bytes, a path over 4095 bytes, a NUL byte) are refused up front.

A split folder is an input of a special shape: other outputs may live inside it (feature stores go to
``SPLIT/features.h5`` by default), so only its own files (manifest.json and the tables) and the folder itself are
protected there (:func:`split_input`). Folders of source files (annotations, videos, frames) are likewise open to
new outputs (:func:`source_input`); run folders and files are closed: nothing may be written inside them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meid_bench.errors import MeidBenchError
from meid_bench.fileio import check_output_file, check_output_folder

# Linux limits (NAME_MAX, PATH_MAX - 1): beyond them every system call on the path fails with ENAMETOOLONG.
NAME_MAX = 255
PATH_MAX = 4095
REPORT_MARKER = "report.json"
REPORT_FORMAT = "meid-bench-report"
# What a split folder holds of its own (split_io.TABLES + the manifest); anything else in it belongs to others.
SPLIT_FILES = ("manifest.json", "train.parquet", "val.parquet", "test.parquet", "classes.parquet")


@dataclass(frozen=True)
class Input:
    """Something a command reads. ``owned``: for a folder that may also hold other files (a split), only these
    entries (and the folder itself) are the input; None: the whole path. ``updatable``: entries of the input that
    the command was asked to update in place (``evaluate --run``'s metrics files)."""

    path: Path
    what: str
    owned: tuple[str, ...] | None = None
    updatable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    """Something a command writes. ``kind``: a key of :data:`KINDS`, what ``--force`` may replace. ``adds_to``: a
    folder the command only adds named files into (never replaces): it may hold inputs, but not lie in one."""

    path: Path
    option: str
    kind: str
    folder: bool = False
    adds_to: bool = False
    existing_ok: bool = False  # may exist without --force and is not replaced: the command continues it (--resume)


def split_input(path: str | os.PathLike, what: str = "--split") -> Input:
    return Input(Path(path), what, owned=SPLIT_FILES)


def source_input(path: str | os.PathLike, what: str) -> Input:
    """A folder of source files (--annotations, --videos, --frames, --source): an output may not be it or hold it,
    but may be a new file or folder inside it; its existing files are kept safe by rule 2 (``--force`` replaces only
    an output of the command's own kind, which a source file is not)."""
    return Input(Path(path), what, owned=())


def run_input(path: str | os.PathLike, what: str = "run folder", updatable: tuple[str, ...] = ()) -> Input:
    return Input(Path(path), what, updatable=updatable)


# -- recognising what meid-bench wrote ---------------------------------------------------------------------------

def _json_object(path: Path) -> dict | None:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(256 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def has_json_format(path: str | os.PathLike, name: str) -> bool:
    """Whether ``path`` is a JSON object whose ``format`` is ``name`` (a record meid-bench wrote)."""
    path = Path(path)
    record = _json_object(path) if path.is_file() else None
    return record is not None and record.get("format") == name


def _json_format(name: str) -> Callable[[Path], bool]:
    return lambda path: has_json_format(path, name)


def _in_folder(record: str, name: str) -> Callable[[Path], bool]:
    check = _json_format(name)
    return lambda path: path.is_dir() and check(path / record)


def _is_store(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        import h5py

        with h5py.File(path, "r", locking=False) as handle:
            return handle.attrs.get("format") in ("meid-bench-features", b"meid-bench-features")
    except Exception:  # not HDF5, damaged, unreadable: not recognisably a store (h5py raises many types)
        return False


def _is_reference(path: Path) -> bool:
    record = _json_object(path) if path.is_file() else None
    return record is not None and {"benchmark", "protocol", "parameters", "tables"} <= set(record)


def _is_per_class(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith("class_id,class_key,name,group,train_count,")
    except (OSError, ValueError):
        return False


_REPORT_NAMES = {"index.html", "results.md", "results.csv", "results_by_method.csv", "paired_differences.csv",
                 "paired_differences_by_seed.csv", REPORT_MARKER}


def _is_report(path: Path) -> bool:
    """A report folder: its marker, or (reports written before the marker) nothing but a report's files: the
    pages and tables, and per-split folders of figures."""
    if not path.is_dir():
        return False
    if _json_format(REPORT_FORMAT)(path / REPORT_MARKER):
        return True
    entries = list(path.iterdir())
    if not (path / "index.html").is_file() or not (path / "results.md").is_file():
        return False
    for entry in entries:
        if entry.name in _REPORT_NAMES and entry.is_file():
            continue
        if entry.is_dir() and not entry.is_symlink() and all(
                f.is_file() and f.suffix in (".png", ".svg", ".pdf") for f in entry.iterdir()):
            continue
        return False
    return True


# kind: (what it is, how to recognise one meid-bench wrote)
KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "split": ("a split folder written by `meid-bench build` (manifest.json of format meid-bench-split)",
              _in_folder("manifest.json", "meid-bench-split")),
    "run": ("a run folder written by `meid-bench train` (run.json of format meid-bench-run)",
            _in_folder("run.json", "meid-bench-run")),
    "report": (f"a report folder written by `meid-bench report` ({REPORT_MARKER})", _is_report),
    "store": ("a feature store written by meid-bench (an HDF5 file of format meid-bench-features)", _is_store),
    "metrics": ("a metrics file written by meid-bench (format meid-bench-metrics)",
                _json_format("meid-bench-metrics")),
    "per-class": ("a per-class table written by `meid-bench evaluate`", _is_per_class),
    "reference": ("a split reference written by `meid-bench verify --write-reference`", _is_reference),
    "diagnosis": ("a diagnosis written by `meid-bench diagnose --json` (format meid-bench-diagnosis)",
                  _json_format("meid-bench-diagnosis")),
    "log": ("a sweep's log of a run", lambda path: path.is_file()),
    "folder": ("a folder", lambda path: path.is_dir()),
}


def is_kind(path: str | os.PathLike, kind: str) -> bool:
    """Whether ``path`` is an existing output of ``kind`` that meid-bench wrote (see :data:`KINDS`)."""
    return KINDS[kind][1](Path(path))


# -- the rule ----------------------------------------------------------------------------------------------------

def check_path_usable(path: str | os.PathLike, option: str) -> Path:
    """A path the system can take: no NUL byte, no name over NAME_MAX bytes, at most PATH_MAX bytes in all."""
    text = os.fspath(path)
    if "\x00" in text:
        raise MeidBenchError(f"{option} {text!r}: contains a NUL byte; choose another path")
    raw = os.fsencode(os.path.abspath(text))
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > NAME_MAX or len(raw) > PATH_MAX:
        shown = text if len(text) <= 80 else text[:60] + "..." + text[-15:]
        raise MeidBenchError(f"{option} {shown}: the path is too long ({len(raw)} bytes, a name of {longest} bytes; "
                             f"at most {NAME_MAX} bytes per name and {PATH_MAX} in all); choose a shorter path")
    return Path(path)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (through links too); False where either does not exist."""
    return _real(Path(a)) == _real(Path(b)) or _same_file(Path(a), Path(b))


def _inside(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies inside it (resolved paths)."""
    return inner == outer or outer in inner.parents


def _conflict(out: Output, item: Input) -> str | None:
    """How ``out`` collides with the input ``item`` (a phrase), or None."""
    target, source = _real(out.path), _real(item.path)
    allowed = {_real(item.path / name) for name in item.updatable}
    if target in allowed or (out.adds_to and item.updatable and target == source):
        return None  # the files the command was asked to update (each is checked as an output of its own)
    if item.owned is None:
        protected = [source]
    else:
        protected = [source / name for name in item.owned]
        if target == source:
            return f"is {item.what} {item.path}"
        if not out.adds_to and _inside(source, target):
            return f"contains {item.what} {item.path}"
    for path in protected:
        if target == path or _same_file(out.path, path):
            return f"is {item.what} {item.path}" if path == source else f"is {path.name} of {item.what} {item.path}"
        if _inside(target, path):
            return f"lies inside {item.what} {item.path}"
        if not out.adds_to and _inside(path, target):
            return f"contains {item.what} {item.path}"
    return None


def check_outputs(outputs: Sequence[Output], inputs: Sequence[Input], force: bool) -> list[Path]:
    """The rule for outputs (module docstring), before any work: each output is a path the system can take, of the
    right type (a file or a folder) with writable parents, collides with no input, and exists only with ``force``
    and only as the kind the command writes (``adds_to`` folders may exist). Returns the output paths."""
    for item in inputs:
        check_path_usable(item.path, item.what)
    for out in outputs:
        check_path_usable(out.path, out.option)
        for item in inputs:
            found = _conflict(out, item)
            if found is not None:
                raise MeidBenchError(f"{out.path}: {out.option} {found}: a command never writes over what it reads, "
                                     f"with or without --force; choose another {out.option}")
        if out.folder:
            check_output_folder(out.path, force, out.option, existing_ok=out.adds_to or out.existing_ok)
        else:
            check_output_file(out.path, force, out.option)
        exists = out.path.exists() or out.path.is_symlink()
        if exists and not (out.adds_to or out.existing_ok) and not is_kind(out.path, out.kind):
            description = KINDS[out.kind][0]
            raise MeidBenchError(f"{out.path}: is not {description}; --force replaces only that, never a "
                                 f"{'folder' if out.folder else 'file'} of another kind; choose another {out.option}")
    return [out.path for out in outputs]
