"""Is every value of a feature store finite? Block tests, and a scan of the frames of chosen videos.

Writers refuse NaN and infinity, so a store written by meid-bench passes; the scan is there for stores changed or
damaged since, which would otherwise train on NaN and fail much later, blaming the predictions. It reads each
frame once, in blocks of about 64 MiB (the frames of consecutive videos merged into one read), and tests the
exponent bits of float16 values (a NaN or an infinity has them all set) rather than calling ``numpy.isfinite``,
which is slow on float16. ``perf/bench_finite_scan.py`` measures it against reading the same frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


BLOCK_BYTES = 64 << 20
_CHUNK = 1 << 18  # values tested at once: the temporaries stay in cache
# float16 values viewed four to a uint64 word: masking the exponents, then adding one exponent step carries into the
# top bit of a value exactly when its exponent is all ones (NaN or infinity). numpy's own isfinite is slow on
# float16 (it converts each value) and fast on float32, which it gets.
_EXPONENT = np.uint64(0x7C007C007C007C00)
_STEP = np.uint64(0x0400040004000400)
_TOP = np.uint64(0x8000800080008000)


def all_finite(block: np.ndarray) -> bool:
    """True when every value of a float16/float32/float64 array is finite."""
    flat = block.reshape(-1)
    if block.dtype == np.dtype("<f2") and block.flags.c_contiguous and block.nbytes % 8 == 0:
        words = flat.view(np.uint64)
        buffer = np.empty(min(_CHUNK, len(words)), dtype=np.uint64)
        for lo in range(0, len(words), _CHUNK):
            part = words[lo:lo + _CHUNK]
            test = buffer[:len(part)]
            np.bitwise_and(part, _EXPONENT, out=test)
            np.add(test, _STEP, out=test)
            np.bitwise_and(test, _TOP, out=test)
            if test.any():
                return False
        return True
    buffer = np.empty(min(_CHUNK, len(flat)), dtype=bool)
    for lo in range(0, len(flat), _CHUNK):
        part = flat[lo:lo + _CHUNK]
        if not np.isfinite(part, out=buffer[:len(part)]).all():
            return False
    return True


def _row_ranges(offsets: np.ndarray, positions: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Row ranges covering the videos at ``positions``, consecutive videos merged."""
    order = np.unique(np.asarray(list(positions), dtype=np.int64))
    if len(order) == 0:
        return
    breaks = np.flatnonzero(np.diff(order) != 1) + 1
    for run in np.split(order, breaks):
        yield int(offsets[run[0]]), int(offsets[run[-1] + 1])


def find_non_finite(store, positions: Iterable[int] | None = None) -> tuple[int, int] | None:
    """The first (video position, frame) holding NaN or infinity among the videos at ``positions`` (default: all),
    or None when every value is finite."""
    offsets = store.offsets
    positions = range(store.num_videos) if positions is None else positions
    rows_per_block = max(1, BLOCK_BYTES // (store.dim * store.dtype.itemsize))
    for lo, hi in _row_ranges(offsets, positions):
        for start in range(lo, hi, rows_per_block):
            stop = min(hi, start + rows_per_block)
            block = store.read_rows(start, stop)
            if all_finite(block):
                continue
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            video = int(np.searchsorted(offsets, row, side="right") - 1)
            return video, row - int(offsets[video])
    return None
