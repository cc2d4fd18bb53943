"""Second hostile round, extraction: one bad source file (a decompression bomb) is that video's error, recorded and
skipped with --allow-missing; a resumed extraction notices a source replaced since its video was extracted; options
beyond any sane bound are refused before work."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from meid_bench.build.features import FeatureStore
from meid_bench.errors import MeidBenchError
from meid_bench.extract.run import extract_features
from meid_bench.extract.write import work_folder_for
from meid_bench.logs import log_lines_to
from test_extract import media, options  # noqa: F401 - the module-scoped media fixture

pytest.importorskip("av")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, side: int = 30000) -> None:
    """A valid PNG header claiming ``side`` x ``side`` pixels (Pillow refuses more than 2 x MAX_IMAGE_PIXELS)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (1 + 3 * 8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))


def frames_copy(media: Path, root: Path) -> tuple[Path, list[str]]:
    target = root / "frames"
    shutil.copytree(media / "frames", target)
    return target, sorted(p.name for p in target.iterdir())


def test_a_decompression_bomb_is_one_videos_error(media, tmp_path):
    frames, ids = frames_copy(media, tmp_path)
    victim = sorted((frames / ids[2]).iterdir())[6]  # shown at 0.5 s: read at 1 fps
    victim.unlink()
    write_bomb_png(victim)
    with pytest.raises(MeidBenchError, match=f"{victim.name}: not a readable image \\(DecompressionBombError"):
        extract_features(options(media, tmp_path / "a.h5", source="frames", frames=frames))
    report = extract_features(options(media, tmp_path / "b.h5", source="frames", frames=frames, allow_missing=True))
    assert [v for v, _ in report.missing] == [ids[2]] and "DecompressionBombError" in report.missing[0][1]
    assert FeatureStore(report.path).missing_video_ids == [ids[2]]


def test_resume_extracts_again_a_source_replaced_since(media, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(media / "videos", videos)
    ids = sorted(p.stem for p in videos.iterdir())
    out = tmp_path / "s.h5"
    seen = []

    def stop_after_three(step: int) -> None:
        seen.append(step)
        if len(seen) == 3:
            raise KeyboardInterrupt  # a Ctrl-C: finished videos stay in the work folder
    with pytest.raises(KeyboardInterrupt):
        extract_features(options(media, out, videos=videos, flush_seconds=0.0), progress=stop_after_three)
    assert work_folder_for(out).is_dir() and not out.exists()
    journal = (work_folder_for(out) / "journal.jsonl").read_text().splitlines()
    first = json.loads(journal[0])["videos"][0][0]  # finished before the interruption; now replaced
    other = next(v for v in ids if v != first)
    shutil.copyfile(videos / f"{other}.mp4", videos / f"{first}.mp4")
    said = []
    with log_lines_to(said.append):
        report = extract_features(options(media, out, videos=videos, resume=True))
    assert any("1 source(s) changed since they were extracted" in line and first in line for line in said), said
    assert report.videos == len(ids)
    fresh = extract_features(options(media, tmp_path / "fresh.h5", videos=videos))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(fresh.path.read_bytes()).digest()


@pytest.mark.parametrize("change, fragment", [
    (dict(fps=1e9), "--fps 1000000000.0: must be a positive number of frames per second, at most 1000"),
    (dict(frames_fps=1e12), "--frames-fps"),
    (dict(workers=100000), "--workers 100000: must be an integer from 1 to 64"),
    (dict(batch=10 ** 7), "--batch 10000000: must be an integer from 1 to 4096"),
])
def test_extract_option_bounds(media, tmp_path, change, fragment):
    with pytest.raises(MeidBenchError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        extract_features(options(media, tmp_path / "x.h5", **change))
    assert not os.listdir(tmp_path)


def test_extract_never_writes_over_its_inputs(media, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(media / "videos", videos)
    before = sorted(os.listdir(videos))
    for out, force, fragment in ((videos, True, "is --videos"),
                                 (videos / before[0], True, "is not a feature store"),
                                 (tmp_path, True, "contains --videos"),
                                 (media / "split" / "manifest.json", True, "is manifest.json of --split")):
        with pytest.raises(MeidBenchError, match=fragment):
            extract_features(options(media, out, videos=videos, force=force))
    assert sorted(os.listdir(videos)) == before
