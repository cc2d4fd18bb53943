"""Readers: the real files' known statistics and quirks, and written fixtures in each format."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_charades_csv, write_classes
from meid_bench.build.readers import read_charades, read_charades_ego, read_videolt
from meid_bench.errors import MeidBenchError

EGO_HEADER = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "descriptions", "actions",
              "length", "egocentric", "charades_video"]


def test_real_charades_counts_and_quirks(charades_real):
    data = read_charades(charades_real)
    videos = data.videos
    train, test = videos.subset == "train", videos.subset == "test"
    assert (train.sum(), test.sum()) == (7985, 1863)
    assert len(data.classes) == 157 and data.classes.keys[0] == "c000"
    assert data.quirks["train"]["videos_without_actions"] == 174
    assert data.quirks["test"]["videos_without_actions"] == 49
    assert data.quirks["train"]["segments"] == 49809 and data.quirks["test"]["segments"] == 16691
    assert data.quirks["train"]["segments_reversed_swapped"] == 7
    # After repair every segment lies inside its video and starts no later than it ends.
    lengths = np.repeat(videos.duration, np.diff(videos.segment_offsets))
    assert (videos.segment_starts <= videos.segment_ends).all()
    assert (videos.segment_ends <= lengths).all()
    counts = videos.take(np.flatnonzero(train)).class_counts(157)
    assert (counts.min(), counts.max()) == (25, 1417)
    assert len(data.sources) == 3 and all(len(s["sha256"]) == 64 for s in data.sources)


def test_real_videolt_reproduces_listed_counts(videolt_real):
    data, listed = read_videolt(videolt_real)
    videos = data.videos
    assert [(videos.subset == s).sum() for s in ("train", "validate", "test")] == [179334, 25619, 51239]
    train = videos.take(np.flatnonzero(videos.subset == "train"))
    assert np.array_equal(train.class_counts(1004), listed)


def test_charades_quirks_in_fixture(tmp_path):
    write_classes(tmp_path, 3)
    rows = [
        {"id": "A", "actions": "c000 5.0 2.0;c001 1.0 30.0", "length": "20.0", "subject": "S1", "scene": "Kitchen"},
        {"id": "B", "actions": "", "length": "10.0"},
        {"id": "C", "actions": "c002 25.0 28.0;c002 1 3", "length": "12.5"},
    ]
    write_charades_csv(tmp_path / "Charades_v1_train.csv", rows)
    write_charades_csv(tmp_path / "Charades_v1_test.csv", [{"id": "T", "actions": "c000 0 1", "length": "5"}])
    data = read_charades(tmp_path)
    quirks = data.quirks["train"]
    assert quirks == {"videos_without_actions": 1, "segments": 4, "segments_reversed_swapped": 1,
                      "segments_clipped_to_length": 2, "segments_outside_video": 1}
    videos = data.videos
    assert videos.labels_of(0).tolist() == [0, 1] and videos.labels_of(1).tolist() == []
    assert videos.labels_of(2).tolist() == [2]  # a segment beyond the length keeps its label
    a = slice(videos.segment_offsets[0], videos.segment_offsets[1])
    assert videos.segment_starts[a].tolist() == [2.0, 1.0] and videos.segment_ends[a].tolist() == [5.0, 20.0]
    assert videos.extra["subject"][0] == "S1" and videos.extra["subject"][1] is None
    # Annotated seconds count overlapping segments of one class once.
    train = videos.take(np.flatnonzero(videos.subset == "train"))
    assert train.annotated_seconds(3).tolist() == [3.0, 19.0, 2.0]


def _ego_rows(prefix: str = "V"):
    rows = []
    for i, (ego, labels) in enumerate([("Yes", "c000 0 5;c001 1 4"), ("No", "c000 0 5"), ("Yes", "c002 2 3")]):
        base = f"{prefix}{i:04d}"
        rows.append({"id": base + ("EGO" if ego == "Yes" else ""), "actions": labels, "length": "10",
                     "egocentric": ego, "charades_video": f"CH{i}", "subject": "S"})
    return rows


@pytest.mark.parametrize("view, expected", [("ego", ["V0000EGO", "V0002EGO"]), ("exo", ["V0001"]),
                                            ("all", ["V0000EGO", "V0001", "V0002EGO"])])
def test_charades_ego_v1_views(tmp_path, view, expected):
    write_classes(tmp_path, 3)
    write_charades_csv(tmp_path / "CharadesEgo_v1_train.csv", _ego_rows(), EGO_HEADER)
    write_charades_csv(tmp_path / "CharadesEgo_v1_test.csv", _ego_rows("T")[:2], EGO_HEADER)
    data = read_charades_ego(tmp_path, view)
    train = data.videos.take(np.flatnonzero(data.videos.subset == "train"))
    assert train.video_ids.tolist() == expected
    paired = dict(zip(train.video_ids, train.extra["paired_video"]))
    if "V0000EGO" in paired:
        assert paired["V0000EGO"] == "V0000"
    assert data.quirks["train"]["videos_outside_view"] == 3 - len(expected)


def test_charades_ego_reads_only1st_subset_files(tmp_path):
    write_classes(tmp_path, 3)
    write_charades_csv(tmp_path / "CharadesEgo_v1_train_only1st.csv",
                       [r for r in _ego_rows() if r["egocentric"] == "Yes"], EGO_HEADER)
    write_charades_csv(tmp_path / "CharadesEgo_v1_test_only1st.csv",
                       [r for r in _ego_rows("T") if r["egocentric"] == "Yes"], EGO_HEADER)
    data = read_charades_ego(tmp_path, "ego")
    assert sorted(data.videos.video_ids[data.videos.subset == "train"]) == ["V0000EGO", "V0002EGO"]
    assert [s["file"] for s in data.sources][1:] == ["CharadesEgo_v1_train_only1st.csv",
                                                     "CharadesEgo_v1_test_only1st.csv"]
    with pytest.raises(MeidBenchError, match="CharadesEgo_v1_train.csv"):
        read_charades_ego(tmp_path, "all")  # the full view needs the full files


def test_charades_ego_bad_egocentric_value(tmp_path):
    write_classes(tmp_path, 3)
    rows = _ego_rows()
    rows[1]["egocentric"] = "maybe"
    write_charades_csv(tmp_path / "CharadesEgo_v1_train.csv", rows, EGO_HEADER)
    write_charades_csv(tmp_path / "CharadesEgo_v1_test.csv", _ego_rows("T"), EGO_HEADER)
    with pytest.raises(MeidBenchError, match=r"CharadesEgo_v1_train.csv:3: field 'egocentric'"):
        read_charades_ego(tmp_path, "ego")
