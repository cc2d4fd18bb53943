"""The feature store: one HDF5 file per feature set, all frames of all videos in one ragged 2-D dataset.

Layout (``docs/formats.md`` documents it field by field):

- ``features``: [total_frames, dim] float16 or float32; the frames of video ``i`` are rows
  ``offsets[i]:offsets[i + 1]``. Written contiguous (no chunks, no filters) when the total is known in advance,
  so a reader can fetch any row range with one positional read; chunked and resizable otherwise.
- ``offsets``: int64 [num_videos + 1]; ``video_ids``: UTF-8 strings [num_videos], in the order written.
- ``missing_video_ids``: videos of the split that the source had no features for (packed with --allow-missing).
- ``frame_labels`` (optional): uint8 [total_frames, ceil(num_classes / 8)], per-frame multi-hot, bits packed.
- Attributes: format, format_version, dim, dtype, fps (NaN when unknown), generator, simulated, split_checksum,
  benchmark, num_videos, num_frames, num_classes, params (JSON), meid_bench_version and ``complete``, written last.

Writers write a hidden temporary sibling and rename it into place only when complete, so an interrupted or failed
write never leaves a file that looks like a store.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from meid_bench.errors import MeidBenchError
from meid_bench.fileio import create_staging_file
from meid_bench.outputs import Output, check_outputs
from meid_bench.build.features.frames import packed_width, unpack_frame_labels
from meid_bench.build.features.store_check import read_store_index

STORE_FORMAT = "meid-bench-features"
STORE_FORMAT_VERSION = 1
STORE_DTYPES = ("float16", "float32")
_FLUSH_BYTES = 8 << 20  # gather small videos into writes of about this size: fewer, larger HDF5 writes
_DIRECT_BYTES = 256 << 10  # a video this large is written at once (gathering would only add a copy)
_CHUNK_BYTES = 1 << 20  # row chunk of a resizable store
_SPAN_BYTES = 1 << 20  # read a sampled video's whole row span when it is at most this large
_ALIGN, _ALIGN_ABOVE = 4096, 64 << 10  # datasets of at least 64 KiB start at a multiple of 4096 bytes


def _store_dtype(dtype: str) -> np.dtype:
    if str(dtype) not in STORE_DTYPES:
        raise MeidBenchError(f"dtype {dtype!r}: a feature store holds {' or '.join(STORE_DTYPES)}; pick one")
    return np.dtype(str(dtype)).newbyteorder("<")


def _encode_ids(ids: Sequence[str]) -> np.ndarray:
    encoded = [str(v).encode("utf-8") for v in ids]
    width = max([1] + [len(v) for v in encoded])
    return np.array(encoded, dtype=f"S{width}")


class FeatureStoreWriter:
    """Write a feature store video by video; use as a context manager (commits on success, removes on error).

    ``total_frames`` known in advance gives the contiguous layout (fastest to read); without it the store is
    chunked and grows. ``num_classes`` enables per-frame labels (then every :meth:`add` passes them).

    A contiguous store is written in place: each video's rows go straight to their byte offset in the file (one
    positional write, no HDF5 call, nothing gathered), so videos may also be written out of order and from
    several threads: :meth:`reserve` them in store order, then :meth:`write_video` each one.
    """

    def __init__(self, path: str | os.PathLike, dim: int, dtype: str = "float32", *, total_frames: int | None = None,
                 split_checksum: str = "", benchmark: str = "", fps: float | None = None, generator: str = "",
                 simulated: bool = False, num_classes: int | None = None, params: dict[str, Any] | None = None,
                 force: bool = False) -> None:
        from meid_bench._version import __version__

        self.path = Path(path)
        check_outputs([Output(self.path, "--out", "store")], [], force)  # --force replaces only a feature store
        if dim <= 0:
            raise MeidBenchError(f"{self.path}: feature dimension {dim} must be positive")
        self.dim = int(dim)
        self.dtype = _store_dtype(dtype)
        self.total_frames = None if total_frames is None else int(total_frames)
        self.num_classes = None if not num_classes else int(num_classes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # HDF5 locks it while this writer lives: a later run removes it only once it is stale (remove_stale_staging).
        self._tmp = create_staging_file(self.path, suffix=".h5")
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._offsets: list[int] = [0]
        self._missing: list[str] = []
        self._pending: list[np.ndarray] = []
        self._pending_labels: list[np.ndarray] = []
        self._pending_bytes = 0
        self._written = 0  # rows already in the file
        self._closed = False
        self._fd: int | None = None  # contiguous store: positional writes at the datasets' offsets
        self._lock = threading.Lock()
        self._unwritten: dict[int, int] = {}  # reserved videos not fully written: frames still to come
        try:
            # Large datasets start on a page boundary: a float16 row of 2048 values is then exactly one page of the
            # file, so a reader's sampled rows cost one page each, not two.
            self._file = h5py.File(self._tmp, "w", alignment_threshold=_ALIGN_ABOVE, alignment_interval=_ALIGN)
            self._features = self._create("features", self.dim, self.dtype)
            self._labels = (self._create("frame_labels", packed_width(self.num_classes), np.dtype(np.uint8))
                            if self.num_classes else None)
            attrs = self._file.attrs
            attrs["format"] = STORE_FORMAT
            attrs["format_version"] = STORE_FORMAT_VERSION
            attrs["dim"] = self.dim
            attrs["dtype"] = self.dtype.name
            attrs["fps"] = float("nan") if fps is None else float(fps)
            attrs["generator"] = str(generator)
            attrs["simulated"] = bool(simulated)
            attrs["split_checksum"] = str(split_checksum)
            attrs["benchmark"] = str(benchmark)
            attrs["num_classes"] = int(self.num_classes or 0)
            attrs["params"] = json.dumps(params or {}, sort_keys=True)
            attrs["meid_bench_version"] = __version__
            attrs["complete"] = False
            if self.total_frames:
                self._frames_at = int(self._features.id.get_offset())
                self._labels_at = int(self._labels.id.get_offset()) if self._labels is not None else None
                self._fd = os.open(self._tmp, os.O_WRONLY)
        except BaseException:
            self.abort()
            raise

    def _create(self, name: str, width: int, dtype: np.dtype) -> h5py.Dataset:
        if self.total_frames is not None:
            # Contiguous, allocated up front and never pre-filled (a fill would write every byte twice).
            shape = (self.total_frames, width)
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.CONTIGUOUS)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            dcpl.set_obj_track_times(False)  # no timestamps: same inputs give the same bytes
            space = h5py.h5s.create_simple(shape, shape)
            tid = h5py.h5t.py_create(dtype, logical=True)
            return h5py.Dataset(h5py.h5d.create(self._file.id, name.encode(), tid, space, dcpl=dcpl))
        rows = max(1, _CHUNK_BYTES // (width * dtype.itemsize))
        return self._file.create_dataset(name, shape=(0, width), maxshape=(None, width), chunks=(rows, width),
                                         dtype=dtype, track_times=False)

    @property
    def num_videos(self) -> int:
        return len(self._ids)

    def add(self, video_id: str, frames: np.ndarray, frame_labels: np.ndarray | None = None,
            source: str = "", checked: bool = False) -> None:
        """Append one video's frames [T, dim] (cast to the store dtype) and, with labels enabled, its packed
        per-frame labels [T, ceil(C / 8)]. ``source`` names the input in error messages; ``checked`` says the
        frames were already found finite in the store dtype."""
        where = source or f"video {video_id}"
        if video_id in self._seen:
            raise MeidBenchError(f"{where}: video id {video_id!r} given twice; every video is stored once")
        frames, labels = self._prepare(frames, frame_labels, where, checked)
        if self._fd is not None:
            self._write_at(self.reserve(video_id, len(frames), source), 0, frames, labels)
            return
        self.reserve(video_id, len(frames), source)
        if labels is not None:
            self._pending_labels.append(labels)
        self._pending.append(frames)
        self._pending_bytes += frames.nbytes
        if self._pending_bytes >= _FLUSH_BYTES or frames.nbytes >= _DIRECT_BYTES:
            self._flush()

    def reserve(self, video_id: str, num_frames: int, source: str = "") -> int:
        """Give the next video of the store ``num_frames`` rows; returns its position. Its frames come with
        :meth:`write_video` (contiguous stores) or right away (:meth:`add`). Call from one thread, in store order."""
        where = source or f"video {video_id}"
        if video_id in self._seen:
            raise MeidBenchError(f"{where}: video id {video_id!r} given twice; every video is stored once")
        if num_frames < 1:
            raise MeidBenchError(f"{where}: no frames; every video holds at least one")
        if self.total_frames is not None and self._offsets[-1] + num_frames > self.total_frames:
            raise MeidBenchError(f"{where}: more frames than the {self.total_frames} announced (a source file "
                                 "changed while packing?); pack again")
        self._seen.add(video_id)
        self._ids.append(video_id)
        self._offsets.append(self._offsets[-1] + int(num_frames))
        position = len(self._ids) - 1
        if self._fd is not None:
            with self._lock:
                self._unwritten[position] = int(num_frames)
        return position

    def write_video(self, position: int, frames: np.ndarray, frame_labels: np.ndarray | None = None,
                    source: str = "", checked: bool = False) -> None:
        """Write the frames (and labels) of the reserved video at ``position`` in place; safe from several
        threads at once. Arguments as for :meth:`add`."""
        rows = self._offsets[position + 1] - self._offsets[position]
        if len(frames) != rows:
            raise MeidBenchError(f"{source or f'video {self._ids[position]}'}: {len(frames)} frames, {rows} were "
                                 "reserved (a source file changed while packing?); pack again")
        self.write_rows(position, 0, frames, frame_labels, source, checked)

    def write_rows(self, position: int, first: int, frames: np.ndarray, frame_labels: np.ndarray | None = None,
                   source: str = "", checked: bool = False) -> None:
        """Write frames ``first..first + len(frames)`` (and their labels) of the reserved video at ``position``
        in place, each frame once; the video counts as written when all its frames are. Safe from several threads
        at once; a long video can go in pieces that stay in the CPU's cache."""
        if self._fd is None:
            raise ValueError("write_rows needs a contiguous store (total_frames given)")
        where = source or f"video {self._ids[position]}"
        rows = self._offsets[position + 1] - self._offsets[position]
        if first < 0 or first + len(frames) > rows:
            raise MeidBenchError(f"{where}: frames {first}..{first + len(frames) - 1} lie outside the {rows} "
                                 "reserved (a source file changed while packing?); pack again")
        frames, labels = self._prepare(frames, frame_labels, where, checked, first)
        self._write_at(position, first, frames, labels)

    def _prepare(self, frames: np.ndarray, frame_labels: np.ndarray | None, where: str, checked: bool,
                 first: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames in the store dtype, checked finite, and labels checked: nothing is recorded before this."""
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != self.dim or frames.shape[0] < 1:
            raise MeidBenchError(f"{where}: features of shape {frames.shape}, expected [frames >= 1, {self.dim}]")
        if frames.dtype != self.dtype:
            checked = False
            with np.errstate(over="ignore"):  # overflow shows up as inf, reported just below
                frames = frames.astype(self.dtype)
        if not checked:
            check_finite(frames, where, first)
        labels = None
        if self.num_classes:
            if frame_labels is None or np.shape(frame_labels) != (len(frames), packed_width(self.num_classes)):
                raise MeidBenchError(f"{where}: per-frame labels missing or of the wrong shape "
                                     f"{None if frame_labels is None else np.shape(frame_labels)}")
            labels = np.asarray(frame_labels, dtype=np.uint8)
        return frames, labels

    def _write_at(self, position: int, first: int, frames: np.ndarray, labels: np.ndarray | None) -> None:
        row = self._offsets[position] + first
        _pwrite_all(self._fd, frames, self._frames_at + row * self.dim * self.dtype.itemsize, self._tmp)
        if labels is not None:
            _pwrite_all(self._fd, labels, self._labels_at + row * labels.shape[1], self._tmp)
        with self._lock:
            left = self._unwritten.get(position, 0) - len(frames)
            if left > 0:
                self._unwritten[position] = left
            else:
                self._unwritten.pop(position, None)
            self._written += len(frames)

    def set_attributes(self, **attributes: str | int | float | bool) -> None:
        """Record extra root attributes (an extractor's provenance: backbone, weights, decoder, ...). The store's
        own attributes (format, dim, dtype, fps, complete, ...) cannot be replaced this way."""
        for name, value in attributes.items():
            if name in self._file.attrs or name in ("num_videos", "num_frames", "num_missing"):
                raise ValueError(f"attribute {name!r} belongs to the store format; pick another name")
            self._file.attrs[name] = value

    def record_missing(self, video_ids: Iterable[str]) -> None:
        """Record videos of the split that have no features (a store packed with --allow-missing)."""
        self._missing.extend(str(v) for v in video_ids)

    def _flush(self) -> None:
        if not self._pending:
            return
        block = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        labels = None
        if self._labels is not None:
            labels = np.concatenate(self._pending_labels) if len(self._pending_labels) > 1 else self._pending_labels[0]
        lo, hi = self._written, self._written + len(block)
        if self.total_frames is None:
            self._features.resize(hi, axis=0)
            if self._labels is not None:
                self._labels.resize(hi, axis=0)
        self._features.id.write(h5py.h5s.create_simple(block.shape), self._select(self._features, lo, hi, self.dim),
                                np.ascontiguousarray(block))
        if labels is not None:
            self._labels[lo:hi] = labels
        self._written = hi
        self._pending, self._pending_labels, self._pending_bytes = [], [], 0

    @staticmethod
    def _select(dataset: h5py.Dataset, lo: int, hi: int, width: int) -> h5py.h5s.SpaceID:
        space = dataset.id.get_space()
        space.select_hyperslab((lo, 0), (hi - lo, width))
        return space

    def _write_strings(self, name: str, values: Sequence[str]) -> None:
        # Fixed-length UTF-8 strings, written through the low-level API: HDF5 will not convert ASCII to UTF-8.
        data = _encode_ids(values)
        tid = h5py.h5t.C_S1.copy()
        tid.set_size(data.dtype.itemsize)
        tid.set_cset(h5py.h5t.CSET_UTF8)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)
        space = h5py.h5s.create_simple((len(data),), (len(data),))
        dataset = h5py.h5d.create(self._file.id, name.encode(), tid, space, dcpl=dcpl)
        if len(data):
            dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, data, mtype=tid)

    def commit(self) -> Path:
        """Write the index and the ``complete`` mark, close, and move the file into place. Returns the path."""
        try:
            self._flush()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self.total_frames is not None and (self._written != self.total_frames or self._unwritten):
                raise MeidBenchError(f"{self.path}: {self._written} frames written, {self.total_frames} announced "
                                     "(a source file changed while packing?); pack again")
            self._write_strings("video_ids", self._ids)
            self._file.create_dataset("offsets", data=np.asarray(self._offsets, dtype="<i8"), track_times=False)
            self._write_strings("missing_video_ids", self._missing)
            self._file.attrs["num_videos"] = len(self._ids)
            self._file.attrs["num_frames"] = int(self._written)
            self._file.attrs["num_missing"] = len(self._missing)
            self._file.attrs["complete"] = True
            self._file.close()
            with open(self._tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, self.path)
            self._closed = True
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written: close and delete the temporary file."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            file = getattr(self, "_file", None)
            if file is not None and file.id.valid:
                file.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "FeatureStoreWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def _pwrite_all(fd: int, array: np.ndarray, offset: int, path: Path) -> None:
    """Write a C-contiguous array's bytes at ``offset`` of the file ``fd``, however many calls it takes."""
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    done = 0
    while done < len(view):
        try:
            written = os.pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            raise MeidBenchError(f"{path}: could not write ({exc.strerror}); free space or fix the folder and "
                                 "write the store again") from None
        done += written


def check_finite(frames: np.ndarray, where: str, first_frame: int = 0) -> None:
    """Raise a MeidBenchError naming the first frame holding NaN or inf (``frames`` being frames
    ``first_frame..`` of a video)."""
    if frames.size == 0 or (np.isfinite(frames.min()) and np.isfinite(frames.max())):
        return  # min and max are NaN or infinite as soon as one value is: two fast passes, no temporary
    finite = np.isfinite(frames)
    if not finite.all():
        row = int(np.argwhere(~finite.all(axis=1))[0, 0])
        value = frames[row][~finite[row]][0]
        hint = "; values above 65504 overflow float16, use --dtype float32" if frames.dtype == np.float16 else ""
        raise MeidBenchError(f"{where}: frame {first_frame + row} holds {value} (features must be finite){hint}")


class FeatureStore:
    """Read a feature store. Opens lazily and reopens in each process (safe with DataLoader workers, picklable).

    Frames come back in the store's dtype (float16 or float32), shape [frames, dim].
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._pid = -1
        self._file: h5py.File | None = None
        self._fd: int | None = None
        if not self.path.is_file():
            raise MeidBenchError(f"{self.path}: no such feature store; create one with `meid-bench features pack` "
                                 "or `meid-bench features synth`")
        try:
            file = h5py.File(self.path, "r")
        except OSError as exc:
            raise MeidBenchError(f"{self.path}: not a readable HDF5 file ({_short(exc)}); it is truncated or not a "
                                 "feature store: pack it again") from None
        with file:
            self._load_metadata(file)

    def _load_metadata(self, file: h5py.File) -> None:
        where = str(self.path)
        index = read_store_index(file, self.path, STORE_FORMAT, STORE_FORMAT_VERSION, STORE_DTYPES)
        self.attrs: dict[str, Any] = index.attrs
        self.dim, self.dtype = index.dim, index.dtype
        self.offsets, self.video_ids, self.missing_video_ids = index.offsets, index.video_ids, index.missing_video_ids
        self._index = {v: i for i, v in enumerate(self.video_ids)}
        self.num_classes, self.has_frame_labels = index.num_classes, index.has_frame_labels
        features = file["features"]
        total = features.shape[0]
        # Direct positional reads when the frames are one plain little-endian block of bytes in the file.
        self._data_offset: int | None = None
        plist = features.id.get_create_plist()
        if plist.get_layout() == h5py.h5d.CONTIGUOUS and plist.get_nfilters() == 0 and total > 0:
            offset = features.id.get_offset()
            if offset is not None and self.dtype.byteorder in ("<", "=", "|") and np.little_endian:
                end = offset + total * self.dim * self.dtype.itemsize
                if os.path.getsize(self.path) < end:
                    raise MeidBenchError(f"{where}: truncated ({os.path.getsize(self.path)} bytes, the frames end at "
                                         f"{end}); pack the features again")
                self._data_offset = int(offset)

    # -- identity and checks -------------------------------------------------------------------------------
    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def total_frames(self) -> int:
        return int(self.offsets[-1])

    @property
    def fps(self) -> float | None:
        fps = float(self.attrs.get("fps", float("nan")))
        return fps if math.isfinite(fps) else None

    @property
    def simulated(self) -> bool:
        return bool(self.attrs.get("simulated", False))

    @property
    def split_checksum(self) -> str:
        return str(self.attrs.get("split_checksum", ""))

    def __len__(self) -> int:
        return len(self.video_ids)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    def index_of(self, video_id: str) -> int:
        """Position of a video in the store; a MeidBenchError when it has none."""
        try:
            return self._index[video_id]
        except KeyError:
            state = "recorded missing in" if video_id in set(self.missing_video_ids) else "not in"
            raise MeidBenchError(f"{self.path}: video {video_id!r} is {state} this feature store") from None

    def check_split(self, split: Any, subsets: Sequence[str] = ("train", "val", "test")) -> None:
        """Refuse a store made for another split, or one lacking a video of ``subsets`` it does not record missing.

        The store may hold more videos than the split.
        """
        if not split.matches(self.split_checksum):
            raise MeidBenchError(f"{self.path}: made for the split with checksum {self.split_checksum[:12] or '?'}, "
                                 f"but {split.path} has {split.checksum[:12]} (other videos, labels, segments or "
                                 "classes); pack or synthesise the features for this split")
        missing = set(self.missing_video_ids)
        absent = [v for subset in subsets for v in split.table(subset)["video_id"]
                  if v not in self._index and v not in missing]
        if absent:
            raise MeidBenchError(f"{self.path}: {len(absent)} videos of {split.path} are not in the store (first: "
                                 f"{', '.join(absent[:5])}); pack the features again")
        if self.has_frame_labels and self.num_classes != split.num_classes:
            raise MeidBenchError(f"{self.path}: per-frame labels have {self.num_classes} classes, the split "
                                 f"{split.num_classes}; pack the features again")

    def expect(self, dim: int | None = None, dtype: str | None = None) -> None:
        """Refuse a store whose dimension or dtype is not the one a model or option expects."""
        if dim is not None and int(dim) != self.dim:
            raise MeidBenchError(f"{self.path}: features of dimension {self.dim}, expected {dim}; use a matching "
                                 "store or set the model's input dimension to match")
        if dtype is not None and np.dtype(dtype) != self.dtype:
            raise MeidBenchError(f"{self.path}: features stored as {self.dtype}, expected {dtype}; pack again with "
                                 f"--dtype {dtype}")

    # -- reading -------------------------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self._pid != os.getpid():
            # A new process (DataLoader worker): never reuse a handle inherited through fork.
            self._file, self._fd, self._pid = None, None, os.getpid()
        if self._data_offset is not None:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
        elif self._file is None:
            self._file = h5py.File(self.path, "r")

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows lo:hi of the frame matrix, a fresh array."""
        return self.read_rows(lo, hi)

    def read_rows(self, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``lo:hi`` of the frame matrix (all videos' frames, in store order) in the store dtype, read into
        ``out`` (C-contiguous, [hi - lo, dim]) when given: a reused or device-staging buffer costs no allocation."""
        self._ensure_open()
        if out is None:
            out = np.empty((hi - lo, self.dim), dtype=self.dtype)
        elif out.shape != (hi - lo, self.dim) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {self.dtype} array of shape {(hi - lo, self.dim)}")
        if hi <= lo:
            return out
        if self._data_offset is None:
            self._file["features"].read_direct(out, np.s_[lo:hi])
            return out
        row_bytes = self.dim * self.dtype.itemsize
        view = memoryview(out).cast("B")
        done, start = 0, self._data_offset + lo * row_bytes
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], start + done)
            if got <= 0:
                raise MeidBenchError(f"{self.path}: unexpected end of file; the store is truncated, pack it again")
            done += got
        return out

    @property
    def frames_offset(self) -> int | None:
        """Byte offset in the file of the frame matrix [total_frames, dim] (little-endian, row-major), or None when
        the frames are not one plain block of bytes (a chunked store): a reader may map or read rows directly."""
        return self._data_offset

    def close(self) -> None:
        if self._pid == os.getpid():
            if self._fd is not None:
                os.close(self._fd)
            if self._file is not None:
                self._file.close()
        self._file, self._fd = None, None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_file=None, _fd=None, _pid=-1)
        return state

    def num_frames(self, video_id: str) -> int:
        i = self.index_of(video_id)
        return int(self.offsets[i + 1] - self.offsets[i])

    def read(self, video_id: str) -> np.ndarray:
        """All frames of a video, [T, dim] in the store dtype."""
        return self.read_at(self.index_of(video_id))

    def read_at(self, position: int) -> np.ndarray:
        return self._rows(int(self.offsets[position]), int(self.offsets[position + 1]))

    def read_frames(self, video_id: str, frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``frame_indices`` (any order, repeats allowed) of a video, [len(indices), dim]."""
        return self.read_frames_at(self.index_of(video_id), frame_indices)

    def read_frames_at(self, position: int, frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        base, end = int(self.offsets[position]), int(self.offsets[position + 1])
        idx = np.asarray(frame_indices, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, self.dim), dtype=self.dtype)
        first, last = int(idx.min()), int(idx.max())
        if first < 0 or last >= end - base:
            raise IndexError(f"frame index out of range [0, {end - base}) for video {self.video_ids[position]}")
        span = last - first + 1
        unique = np.unique(idx)
        if span * self.dim * self.dtype.itemsize <= _SPAN_BYTES or span <= 2 * len(unique):
            return self._rows(base + first, base + last + 1)[idx - first]
        # Long video, sparse sample: read each run of consecutive wanted rows, not the whole span.
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        runs = np.split(unique, breaks)
        block = np.concatenate([self._rows(base + int(r[0]), base + int(r[-1]) + 1) for r in runs])
        return block[np.searchsorted(unique, idx)]

    def read_frame_labels(self, video_id: str, frame_indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Per-frame multi-hot labels uint8 [frames, num_classes] (all frames, or those of ``frame_indices``)."""
        return self.read_frame_labels_at(self.index_of(video_id), frame_indices)

    def read_frame_labels_at(self, position: int, frame_indices: Sequence[int] | np.ndarray | None = None
                             ) -> np.ndarray:
        if not self.has_frame_labels:
            raise MeidBenchError(f"{self.path}: holds no per-frame labels; pack or synthesise with --frame-labels")
        self._ensure_open()
        file = self._file if self._file is not None else h5py.File(self.path, "r")
        if self._file is None:
            self._file = file
        base, end = int(self.offsets[position]), int(self.offsets[position + 1])
        packed = file["frame_labels"][base:end]
        if frame_indices is not None:
            packed = packed[np.asarray(frame_indices, dtype=np.int64)]
        return unpack_frame_labels(packed, self.num_classes)

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, videos={self.num_videos}, frames={self.total_frames}, "
                f"dim={self.dim}, dtype={self.dtype.name}, simulated={self.simulated})")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
