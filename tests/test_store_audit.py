"""The store audit training runs first: sha256 and the finite check in one read, remembered for large stores."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from meid_bench import MeidBenchError
from meid_bench.build.features import FeatureStore
from meid_bench.build.features import audit as audit_module
from meid_bench.build.features.audit import audit_store, check_audit_finite
from meid_bench.build.split_io import sha256_file
from test_feature_store import _videos, write_store


def _poison(path, row: int, column: int, value: float) -> None:
    with h5py.File(path, "r+") as file:
        file["features"][row, column] = value


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEID_BENCH_CACHE", str(folder))
    return folder


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_audit_hashes_the_file_and_finds_the_first_bad_frame(tmp_path, cache, contiguous, dtype):
    path = write_store(tmp_path / "s.h5", _videos([5, 3, 7, 4], dim=8), dtype=dtype, contiguous=contiguous)
    store = FeatureStore(path)
    assert (store.frames_offset is not None) == contiguous
    clean = audit_store(store)
    assert clean.sha256 == sha256_file(path) and clean.non_finite is None
    check_audit_finite(store, clean)
    store.close()

    _poison(path, 5 + 3 + 2, 4, np.inf)  # video v2, frame 2
    _poison(path, 5 + 3 + 6, 1, np.nan)  # a later one in the same video
    store = FeatureStore(path)
    found = audit_store(store)
    assert found.non_finite == (2, 2) and found.sha256 == sha256_file(path) != clean.sha256
    with pytest.raises(MeidBenchError, match=r"video 'v2', frame 2 holds inf"):
        check_audit_finite(store, found)


def test_large_store_verdicts_are_remembered_until_the_file_changes(tmp_path, cache, monkeypatch):
    path = write_store(tmp_path / "s.h5", _videos([6, 6], dim=4))
    first = audit_store(FeatureStore(path), remember_bytes=0)
    assert len(list((cache / "store-audits").iterdir())) == 1

    def unread(store):
        raise AssertionError("the store was read again")

    monkeypatch.setattr(audit_module, "_hash_and_scan", unread)
    assert audit_store(FeatureStore(path), remember_bytes=0) == first
    monkeypatch.undo()
    monkeypatch.setenv("MEID_BENCH_CACHE", str(cache))

    # Any write changes the status-change time: the damaged store is read again and refused.
    _poison(path, 3, 0, np.nan)
    again = audit_store(FeatureStore(path), remember_bytes=0)
    assert again.non_finite == (0, 3) and again.sha256 != first.sha256


def test_small_stores_and_dirty_verdicts_are_not_remembered(tmp_path, cache):
    path = write_store(tmp_path / "s.h5", _videos([4], dim=4))
    audit_store(FeatureStore(path))  # far below the 1 GiB default
    assert not cache.exists()
    _poison(path, 1, 1, np.nan)
    assert audit_store(FeatureStore(path), remember_bytes=0).non_finite == (0, 1)
    assert not cache.exists()


def test_an_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("MEID_BENCH_CACHE", str(blocker))
    path = write_store(tmp_path / "s.h5", _videos([4, 2], dim=4))
    assert audit_store(FeatureStore(path), remember_bytes=0).sha256 == sha256_file(path)
