"""`features pack`: every source format round-trips; bad sources fail cleanly and leave no file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from meid_bench import MeidBenchError, load_split
from meid_bench.build.features import FeatureStore, pack_features
from meid_bench.cli import main
from test_feature_store import make_split


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return load_split(make_split(tmp_path_factory.mktemp("split") / "split", sizes=(6, 2, 3)))


def _all_ids(split) -> list[str]:
    return [v for name in ("train", "val", "test") for v in split.table(name)["video_id"]]


def _features(split, dim=5, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 40] + [int(n) for n in rng.integers(1, 12, len(_all_ids(split)))]
    return {v: (rng.standard_normal((lengths[i], dim)) * 10).astype(np.float32) for i, v in enumerate(_all_ids(split))}


def _write_source(root: Path, fmt: str, videos: dict[str, np.ndarray]) -> Path:
    root.mkdir()
    for video_id, frames in videos.items():
        if fmt == "npy":
            np.save(root / f"{video_id}.npy", frames)
        elif fmt == "i3d":
            np.save(root / f"{video_id}.npy", frames[:, None, None, :])
        else:
            folder = root / video_id
            folder.mkdir()
            # Written out of order and with numbers of different widths: the frame number orders them.
            for t in reversed(range(len(frames))):
                (folder / f"{video_id}-{t + 1}.txt").write_text(" ".join(repr(float(x)) for x in frames[t]) + "\n")
    return root


@pytest.mark.parametrize("fmt", ["npy", "i3d", "txt-dir"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, split, fmt, dtype):
    videos = _features(split)
    source = _write_source(tmp_path / "src", fmt, videos | {"NOT_IN_SPLIT": np.zeros((2, 5), np.float32)})
    report = pack_features(split, source, fmt, tmp_path / "out.h5", dtype=dtype, workers=2)
    assert report.videos == len(videos) and report.ignored == 1 and report.missing == []
    store = FeatureStore(tmp_path / "out.h5")
    store.check_split(split)
    assert store.video_ids == _all_ids(split)
    for video_id, frames in videos.items():
        got = store.read(video_id)
        if dtype == "float32":
            assert np.array_equal(got, frames)  # exact
        else:
            np.testing.assert_allclose(got.astype(np.float32), frames, rtol=2 ** -10, atol=1e-7)


def test_missing_videos(tmp_path, split):
    videos = _features(split)
    absent = _all_ids(split)[3]
    source = _write_source(tmp_path / "src", "npy", {v: f for v, f in videos.items() if v != absent})
    with pytest.raises(MeidBenchError, match=f"1 of {len(videos)} videos .*{absent}.*--allow-missing"):
        pack_features(split, source, "npy", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()
    report = pack_features(split, source, "npy", tmp_path / "out.h5", allow_missing=True)
    assert report.missing == [absent]
    store = FeatureStore(tmp_path / "out.h5")
    assert store.missing_video_ids == [absent]
    store.check_split(split)


def test_frame_labels_from_segments(tmp_path, split):
    ids = _all_ids(split)
    videos = {v: np.zeros((8, 3), np.float32) for v in ids}
    source = _write_source(tmp_path / "src", "npy", videos)
    pack_features(split, source, "npy", tmp_path / "out.h5", frame_labels=True)
    store = FeatureStore(tmp_path / "out.h5")
    video = split.train.iloc[0]
    labels = store.read_frame_labels(video["video_id"])
    assert labels.shape == (8, split.num_classes)
    # Frames evenly spread over the duration: the label of frame t is whether a segment covers its centre.
    centre = (np.arange(8) + 0.5) * video["duration"] / 8
    for cls in range(split.num_classes):
        covered = np.zeros(8, bool)
        for c, s, e in zip(video["segment_classes"], video["segment_starts"], video["segment_ends"]):
            covered |= (c == cls) & (centre >= s) & (centre < e)
        assert labels[:, cls].tolist() == covered.astype(int).tolist()


@pytest.mark.parametrize("fmt, damage, message", [
    ("npy", lambda f: f[:, :3], "dimension 3, the other videos have 5"),
    ("npy", lambda f: f[None], "expects \\[T, D\\]"),
    ("i3d", lambda f: f[:, None, :], "expects \\[T, 1, 1, D\\]"),
    ("npy", lambda f: np.where(np.arange(len(f))[:, None] == len(f) - 1, np.inf, f), "holds inf"),
    ("npy", lambda f: np.full_like(f, np.nan), "holds nan"),
    ("npy", lambda f: f.astype(np.complex64), "expected floating point"),
])
def test_bad_source_files(tmp_path, split, fmt, damage, message):
    videos = _features(split)
    victim = _all_ids(split)[-1]
    source = tmp_path / "src"
    source.mkdir()
    for video_id, frames in videos.items():
        array = frames if fmt == "npy" else frames[:, None, None, :]
        if video_id == victim:
            array = damage(frames)
        np.save(source / f"{video_id}.npy", array)
    with pytest.raises(MeidBenchError, match=message):
        pack_features(split, source, fmt, tmp_path / "out.h5", workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no temporary left


def test_bad_text_frames(tmp_path, split):
    videos = _features(split)
    source = _write_source(tmp_path / "src", "txt-dir", videos)
    victim = _all_ids(split)[2]
    (source / victim / f"{victim}-7.txt").write_text("1.0 oops 3.0 4.0 5.0\n")
    with pytest.raises(MeidBenchError, match="not a whitespace-separated vector"):
        pack_features(split, source, "txt-dir", tmp_path / "out.h5", workers=2)
    (source / victim / f"{victim}-7.txt").write_text("1.0 2.0\n")
    with pytest.raises(MeidBenchError, match="a vector of 2 numbers, expected 5"):
        pack_features(split, source, "txt-dir", tmp_path / "out.h5", workers=1)
    (source / victim / f"{victim}-7.txt").unlink()
    (source / victim / "notes.txt").write_text("x")
    with pytest.raises(MeidBenchError, match="no frame number"):
        pack_features(split, source, "txt-dir", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_cli_pack(tmp_path, split):
    source = _write_source(tmp_path / "src", "npy", _features(split))
    out = tmp_path / "out.h5"
    args = ["features", "pack", "--split", str(split.path), "--source", str(source), "--format", "npy",
            "--out", str(out), "--dtype", "float16"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert FeatureStore(out).dtype == np.float16
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already exists" in again.output and "Traceback" not in again.output
    assert CliRunner().invoke(main, args + ["--force"]).exit_code == 0
    bad = CliRunner().invoke(main, ["features", "pack", "--split", str(split.path), "--source",
                                    str(tmp_path / "nowhere"), "--format", "npy", "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "no such folder" in bad.output
    info = CliRunner().invoke(main, ["features", "info", str(out), "--split", str(split.path)])
    assert info.exit_code == 0 and "matches" in info.output
    (tmp_path / "junk.h5").write_text("junk")
    bad = CliRunner().invoke(main, ["features", "info", str(tmp_path / "junk.h5")])
    assert bad.exit_code == 2 and "not a readable HDF5" in bad.output


def test_unusual_npy_sources_pack_like_numpy_reads_them(tmp_path, split):
    # Every source dtype and layout numpy writes: read in place when the layout allows, through numpy otherwise.
    videos = _features(split)
    kinds = [np.float64, ">f4", np.float16, np.int16]
    source = tmp_path / "src"
    source.mkdir()
    expected = {}
    for i, (video_id, frames) in enumerate(videos.items()):
        array = frames.astype(kinds[i % len(kinds)])
        np.save(source / f"{video_id}.npy", np.asfortranarray(array) if i % 3 == 0 else array)
        expected[video_id] = array.astype(np.float32)
    pack_features(split, source, "npy", tmp_path / "out.h5", workers=3)
    store = FeatureStore(tmp_path / "out.h5")
    for video_id, frames in expected.items():
        assert np.array_equal(store.read(video_id), frames)


def test_a_source_that_changes_while_packing_is_an_error(tmp_path, split, monkeypatch):
    from meid_bench.build.features import pack

    source = _write_source(tmp_path / "src", "npy", _features(split))
    victim = source / f"{_all_ids(split)[4]}.npy"
    original = pack._npy_header

    def header_then_truncate(path):
        header = original(path)
        if path == victim:  # cut after the pre-pass read its header
            victim.write_bytes(victim.read_bytes()[:-8])
        return header

    monkeypatch.setattr(pack, "_npy_header", header_then_truncate)
    with pytest.raises(MeidBenchError, match="changed while packing"):
        pack_features(split, source, "npy", tmp_path / "out.h5", workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_long_video_is_packed_in_pieces_and_errors_name_its_frame(tmp_path, split):
    rng = np.random.default_rng(3)
    videos = {v: rng.standard_normal((2, 512)).astype(np.float32) for v in _all_ids(split)}
    long_id = _all_ids(split)[1]
    videos[long_id] = rng.standard_normal((700, 512)).astype(np.float32)  # 1.4 MB: three pieces
    source = _write_source(tmp_path / "src", "npy", videos)
    pack_features(split, source, "npy", tmp_path / "ok.h5", dtype="float16", workers=2)
    assert np.array_equal(FeatureStore(tmp_path / "ok.h5").read(long_id), videos[long_id].astype(np.float16))
    videos[long_id][600, 7] = np.nan
    np.save(source / f"{long_id}.npy", videos[long_id])
    with pytest.raises(MeidBenchError, match="frame 600 holds nan"):
        pack_features(split, source, "npy", tmp_path / "bad.h5", workers=2)
