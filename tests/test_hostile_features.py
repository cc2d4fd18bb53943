"""Feature stores and packing inputs damaged every way we could think of, absurd feature options, outputs that
collide, and writes killed half-way: each is one clear error (exit status 2, nothing written) or, for a killed
write, cleaned up by the next run."""

from __future__ import annotations

import random

import h5py
import numpy as np
import pytest

from hostile_support import (TRUNCATIONS, assert_clean_outcome, assert_refused, invoke, overwrite, random_bytes,
                             train_args, truncate, workspace)
from meid_bench.build.features.finite import all_finite, find_non_finite
from meid_bench.build.features.pack import pack_features
from meid_bench.build.split_io import load_split
from meid_bench.errors import MeidBenchError
from meid_bench.build.features.store import FeatureStore, FeatureStoreWriter
from meid_bench.fileio import remove_stale_staging


def store_of(ws):
    return ws / "split" / "features.h5"


def edit_store(path, edit) -> None:
    with h5py.File(path, "r+") as file:
        edit(file)


def replace_dataset(name, make):
    def edit(file):
        data = make(file[name][()] if name in file else None)
        if name in file:
            del file[name]
        if data is not None:
            if isinstance(data, str):
                file.create_group(name)
            else:
                file.create_dataset(name, data=data)
    return edit


def set_attr(name, value):
    return lambda file: file.attrs.__setitem__(name, value)


def del_attr(name):
    return lambda file: file.attrs.__delitem__(name)


def set_frame(row, value):
    def edit(file):
        file["features"][row, 0] = value
    return edit


def bad_utf8(ids):
    ids = ids.copy()
    ids[0] = b"\xff\xfe" + ids[0][2:]
    return ids


STORE_DAMAGE = [
    (del_attr("format"), "attribute 'format'"),
    (del_attr("format_version"), "attribute 'format_version'"),
    (del_attr("dim"), "attribute 'dim': missing"),
    (del_attr("dtype"), "attribute 'dtype': missing"),
    (del_attr("complete"), "not marked complete"),
    (del_attr("split_checksum"), "attribute 'split_checksum': missing"),
    (set_attr("dim", "eight"), "attribute 'dim': expected an integer"),
    (set_attr("dim", -4), "attribute 'dim': expected an integer >= 1"),
    (set_attr("dim", 8), "dataset 'features'"),
    (set_attr("dim", 2.5), "attribute 'dim'"),
    (set_attr("dtype", "complex64"), "attribute 'dtype': is 'complex64'"),
    (set_attr("dtype", "not a dtype"), "attribute 'dtype'"),
    (set_attr("dtype", 5), "attribute 'dtype': expected text"),
    (set_attr("dtype", "float32"), "dataset 'features'"),
    (set_attr("format_version", "one"), "attribute 'format_version'"),
    (set_attr("complete", "yes"), "attribute 'complete'"),
    (set_attr("fps", "fast"), "attribute 'fps'"),
    (set_attr("fps", -1.0), "attribute 'fps'"),
    (set_attr("fps", np.inf), "attribute 'fps'"),
    (set_attr("num_classes", -3), "attribute 'num_classes'"),
    (set_attr("params", "{"), "attribute 'params': expected a JSON object"),
    (set_attr("params", "[1]"), "attribute 'params'"),
    (set_attr("simulated", "no"), "attribute 'simulated'"),
    (set_attr("split_checksum", 7), "attribute 'split_checksum'"),
    (set_attr("split_checksum", "0" * 64), "made for the split with checksum 000000000000"),
    (replace_dataset("video_ids", bad_utf8), "dataset 'video_ids': entry 0 is not UTF-8"),
    (replace_dataset("video_ids", lambda ids: np.arange(len(ids))), "dataset 'video_ids': expected a list"),
    (replace_dataset("video_ids", lambda ids: ids[:-1]), "offsets index does not match"),
    (replace_dataset("video_ids", lambda ids: np.concatenate([ids[:1], ids[:-1]])), "duplicate video ids"),
    (replace_dataset("video_ids", lambda ids: None), "dataset 'video_ids': missing"),
    (replace_dataset("missing_video_ids", lambda ids: "group"), "dataset 'missing_video_ids': is not a dataset"),
    (replace_dataset("offsets", lambda o: o.astype(float)), "dataset 'offsets': expected integers"),
    (replace_dataset("offsets", lambda o: np.stack([o, o])), "dataset 'offsets'"),
    (replace_dataset("offsets", lambda o: o[::-1].copy()), "offsets index does not match"),
    (replace_dataset("offsets", lambda o: np.concatenate([o[:3], [o[3] + 10 ** 9], o[4:]])), "offsets index"),
    (replace_dataset("features", lambda f: f[:, :2]), "dataset 'features'"),
    (replace_dataset("features", lambda f: None), "dataset 'features': missing"),
    (lambda file: (file.create_dataset("frame_labels", data=np.zeros((3, 1), np.uint8)),
                   file.attrs.__setitem__("num_classes", 6)), "dataset 'frame_labels'"),
    (set_frame(0, np.nan), "frame 0 holds nan"),
    (set_frame(-1, np.inf), "holds inf"),
    (set_frame(40, -np.inf), "holds -inf"),
]


@pytest.mark.parametrize("edit, fragment", STORE_DAMAGE, ids=[f for _, f in STORE_DAMAGE])
def test_damaged_store_is_refused_before_training(hostile_base, tmp_path, edit, fragment):
    ws = workspace(hostile_base, tmp_path)
    edit_store(store_of(ws), edit)
    assert_refused(ws, train_args(ws), 2, "features.h5", fragment)


@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_truncated_store(hostile_base, tmp_path, keep):
    ws = workspace(hostile_base, tmp_path)
    truncate(store_of(ws), keep)
    assert_refused(ws, train_args(ws), 2, "features.h5")
    assert_refused(ws, ["features", "info", store_of(ws)], 2, "features.h5")


@pytest.mark.parametrize("seed", range(3))
def test_random_store(hostile_base, tmp_path, seed):
    ws = workspace(hostile_base, tmp_path)
    random_bytes(store_of(ws), seed)
    assert_refused(ws, train_args(ws), 2, "not a readable HDF5 file")


@pytest.mark.parametrize("start", [0.0, 0.005, 0.97, 0.99])
def test_store_overwritten_in_its_metadata(hostile_base, tmp_path, start):
    """Random bytes over the superblock or the index at the end: whatever HDF5 makes of it, a clean outcome."""
    ws = workspace(hostile_base, tmp_path)
    overwrite(store_of(ws), 7, start, 256)
    assert_clean_outcome(ws, train_args(ws))
    assert_clean_outcome(ws, ["features", "info", store_of(ws)])


def test_nan_features_are_refused_by_the_probe(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    edit_store(store_of(ws), set_frame(3, np.nan))
    assert_refused(ws, ["features", "probe", "--split", ws / "split"], 2, "NaN or infinite")


def test_finite_scan_finds_the_first_bad_frame(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    store = FeatureStore(store_of(ws))
    assert find_non_finite(store) is None
    row = int(store.offsets[5]) + 2
    edit_store(store_of(ws), set_frame(row, np.nan))
    assert find_non_finite(FeatureStore(store_of(ws))) == (5, 2)
    assert find_non_finite(FeatureStore(store_of(ws)), positions=[0, 1, 7]) is None
    for dtype in (np.float16, np.float32, np.float64):
        block = np.ones((5, 3), dtype)
        assert all_finite(block)
        for bad in (np.nan, np.inf, -np.inf):
            block[4, 2] = bad
            assert not all_finite(block) and not all_finite(block[3:])
            block[4, 2] = np.finfo(dtype).max
            assert all_finite(block)


# -- packing inputs (npy) -------------------------------------------------------------------------------------------

def pack_args(ws, *extra):
    return ["features", "pack", "--split", ws / "split", "--source", ws / "src", "--format", "npy", "--out",
            ws / "p.h5", *extra]


def first_source(ws):
    return sorted((ws / "src").iterdir())[0]


def bad_header(path):
    data = bytearray(path.read_bytes())
    data[12:30] = b"{'descr': <f4(((((("
    path.write_bytes(bytes(data))


NPY_DAMAGE = [
    (bad_header, "not a readable .npy file"),
    (lambda p: p.write_bytes(p.read_bytes()[:20]), "not a readable .npy file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-5]), "not a readable .npy file"),
    (lambda p: p.write_bytes(b""), "not a readable .npy file"),
    (lambda p: random_bytes(p, 1), "not a readable .npy file"),
    (lambda p: np.save(p, np.full((3, 4), np.nan, np.float32)), "holds nan"),
    (lambda p: np.save(p, np.full((3, 4), -np.inf, np.float32)), "holds -inf"),
    (lambda p: np.save(p, np.full((3, 4), 1e300)), "holds inf"),
    (lambda p: np.save(p, np.array([[None] * 4] * 3, dtype=object), allow_pickle=True), "dtype object"),
    (lambda p: np.save(p, np.zeros((3, 4), np.complex64)), "dtype complex64"),
    (lambda p: np.save(p, np.zeros((3, 4), dtype=[("a", "f4")])), "expected floating point"),
    (lambda p: np.save(p, np.zeros((3, 4, 2), np.float32)), "expects [T, D]"),
    (lambda p: np.save(p, np.zeros((0, 4), np.float32)), "holds no frames"),
    (lambda p: np.save(p, np.zeros((3, 5), np.float32)), "dimension"),
    (lambda p: (p.unlink(), p.mkdir()), "not a readable .npy file"),
]


@pytest.mark.parametrize("edit, fragment", NPY_DAMAGE, ids=[f"{i}-{f}" for i, (_, f) in enumerate(NPY_DAMAGE)])
def test_damaged_source_file(hostile_base, tmp_path, edit, fragment):
    ws = workspace(hostile_base, tmp_path)
    edit(first_source(ws))
    assert_refused(ws, pack_args(ws), 2, fragment)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy's literal parser on a header like '\o'
def test_npy_header_fuzz_never_crashes(hostile_base, tmp_path):
    """Bytes of a source file's header changed at random (numpy parses the header as Python literals, whose
    tokenizer and parser raise their own errors): packing fails with a clear error or packs, never crashes."""
    ws = workspace(hostile_base, tmp_path)
    split = load_split(ws / "split")
    target = first_source(ws)
    good = target.read_bytes()
    header_end = good.index(b"\n") + 1
    rng = random.Random(3)
    refused = 0
    for index in range(60):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(8, header_end)] = ord(rng.choice("'\"(){}[],:#\\ x9")) if index % 2 else \
                rng.randrange(256)
        target.write_bytes(bytes(data))
        out = tmp_path / f"p{index}.h5"
        try:
            pack_features(split, ws / "src", "npy", out, workers=1)
        except MeidBenchError:
            refused += 1
            assert not out.exists() and not list(tmp_path.glob(f".p{index}.h5.tmp-*"))
    assert refused > 30


def test_damaged_source_file_late_in_the_pack(hostile_base, tmp_path):
    """The bad file comes after others were written: the half-written store is removed, nothing is left."""
    ws = workspace(hostile_base, tmp_path)
    np.save(sorted((ws / "src").iterdir())[-1], np.full((3, 4), np.nan, np.float32))
    assert_refused(ws, pack_args(ws), 2, "holds nan")


# -- options and outputs ------------------------------------------------------------------------------------------

def synth_args(ws, *extra):
    return ["features", "synth", "--split", ws / "split", "--out", ws / "s.h5", "--dim", "4", *extra]


@pytest.mark.parametrize("args, fragment", [
    (("--fps", "-1"), "--fps -1.0: must be a finite number > 0"),
    (("--fps", "nan"), "--fps nan"),
    (("--fps", "inf"), "--fps inf"),
    (("--fps", "0"), "--fps 0.0"),
], ids=["negative", "nan", "inf", "zero"])
def test_pack_options(hostile_base, tmp_path, args, fragment):
    ws = workspace(hostile_base, tmp_path)
    assert_refused(ws, pack_args(ws, *args), 2, fragment)


@pytest.mark.parametrize("args, fragment", [
    (("--fps", "1e30"), "s.h5: would take"),
    (("--fps", "inf"), "--fps inf"),
    (("--fps", "nan"), "--fps nan"),
    (("--dim", "100000000000"), "s.h5: would take"),
    (("--noise", "nan"), "--noise nan"),
    (("--class-overlap", "1.5"), "--class-overlap"),
    (("--default-duration", "inf"), "--default-duration"),
], ids=["fps-huge", "fps-inf", "fps-nan", "dim-huge", "noise-nan", "overlap", "duration-inf"])
def test_synth_options(hostile_base, tmp_path, args, fragment):
    ws = workspace(hostile_base, tmp_path)
    assert_refused(ws, synth_args(ws, *args), 2, fragment)


@pytest.mark.parametrize("command", ["pack", "synth"])
def test_output_paths_are_checked_before_any_work(hostile_base, tmp_path, command):
    ws = workspace(hostile_base, tmp_path)
    (ws / "folder.h5").mkdir()
    (ws / "file").write_text("mine")
    (ws / "taken.h5").write_text("mine")
    make = pack_args if command == "pack" else synth_args
    for out, fragment in ((ws / "folder.h5", "is a folder"), (ws / "file" / "x.h5", "is a file, not a folder"),
                          (ws / "taken.h5", "already exists; pass --force")):
        args = make(ws)
        args[args.index("--out") + 1] = out
        assert_refused(ws, args + (["--force"] if "folder" in str(out) else []), 2, fragment)


# -- writes killed half-way ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["pack", "synth"])
def test_rerun_removes_its_own_stale_temporary_files_only(hostile_base, tmp_path, command):
    ws = workspace(hostile_base, tmp_path)
    out = ws / ("p.h5" if command == "pack" else "s.h5")
    stale = ws / f".{out.name}.tmp-k1ll3d_0.h5"  # what a killed writer leaves
    others = [ws / f".{out.name}.tmp-notours", ws / ".other.h5.tmp-abcdefgh.h5", ws / f"{out.name}.tmp-abcdefgh.h5"]
    for path in [stale] + others:
        path.write_bytes(b"partial")
    result = invoke(*(pack_args(ws) if command == "pack" else synth_args(ws)))
    assert result.exit_code == 0, result.output
    assert not stale.exists() and all(path.read_bytes() == b"partial" for path in others)
    assert "removed 1 temporary file(s) left by an interrupted write" in result.stderr
    assert FeatureStore(out).num_videos > 0


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    out = tmp_path / "live.h5"
    writer = FeatureStoreWriter(out, 4, "float32")  # HDF5 holds its temporary file locked while writing
    try:
        assert remove_stale_staging(out, suffix=".h5") == []
        assert writer._tmp.exists()
        writer.add("v", np.ones((2, 4), np.float32))
    finally:
        writer.commit()
    assert FeatureStore(out).num_videos == 1 and not list(tmp_path.glob(".live.h5.tmp-*"))
