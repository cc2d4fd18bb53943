"""`features extract`: frame counts, determinism, resume after a kill, videos vs frame folders, bad inputs, the
store `train` reads, weights, and the feature specification. Tiny random backbones on small synthetic videos."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from meid_bench import MeidBenchError, load_split
from meid_bench.build.features import FeatureStore, SynthConfig, synthesize_features
from meid_bench.build.features.pack import split_video_table
from meid_bench.cli import main
from meid_bench.extract.catalog import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD, Preprocessing
from meid_bench.extract.run import ExtractOptions, extract_features
from meid_bench.extract.write import work_folder_for
from meid_bench.logs import log_lines_to
from extract_media import HEIGHT, WIDTH, frame_image, write_frame_folder, write_video
from test_feature_store import make_split

av = pytest.importorskip("av")

# Small inputs keep the real code paths and the test under a minute on two cores.
FRAME_PRE = Preprocessing((40,), (32, 32), IMAGENET_MEAN, IMAGENET_STD)
CLIP_PRE = Preprocessing((36, 48), (32, 32), KINETICS_MEAN, KINETICS_STD)
TINY = {"resnet50": dict(width=8, blocks=(1, 1, 1, 1), preprocessing=FRAME_PRE),
        "r2plus1d_18": dict(width=8, blocks=(1, 1, 1, 1), preprocessing=CLIP_PRE)}
FPS = 1.0
SOURCE_FPS = 12  # the test media's frame rate


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A split of 11 videos of 4-20 s, as H.264 files (12 fps) and as folders of the same frames as jpg."""
    root = tmp_path_factory.mktemp("media")
    split_dir = make_split(root / "split", sizes=(6, 2, 3))
    (root / "videos").mkdir()
    for seed, video in enumerate(split_video_table(load_split(split_dir)).itertuples()):
        write_video(root / "videos" / f"{video.video_id}.mp4", seed, video.duration, SOURCE_FPS)
        write_frame_folder(root / "frames", video.video_id, seed, video.duration, SOURCE_FPS)
    return root


def options(media: Path, out: Path, backbone: str = "resnet50", source: str = "videos", **extra) -> ExtractOptions:
    settings = dict(split=media / "split", backbone=backbone, out=out, weights="random", fps=FPS, workers=2,
                    frames_fps=SOURCE_FPS, **TINY[backbone])
    settings[source] = media / source
    settings.update(extra)
    return ExtractOptions(**settings)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stores(media, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """One store per backbone kind and input kind."""
    out = tmp_path_factory.mktemp("stores")
    return {(b, s): extract_features(options(media, out / f"{b}-{s}.h5", b, s)).path
            for b in TINY for s in ("videos", "frames")}


# -- sampling --------------------------------------------------------------------------------------------------------

def test_each_instant_gets_the_frame_shown_then(tmp_path):
    from meid_bench.extract.decode import read_frame_folder, read_video
    from meid_bench.extract.sample import clip_instants, frames_showing

    # Frame k is a flat grey of level 8k: the decoded level tells which frame an instant received.
    import av as pyav

    path = tmp_path / "ramp.mp4"
    with pyav.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in pyav.codecs_available else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"crf": "0"} if stream.codec_context.name == "libx264" else {}
        for k in range(25):
            image = np.full((32, 32, 3), 8 * k, dtype=np.uint8)
            for packet in stream.encode(pyav.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    instants = np.array([[0.35, -0.2], [0.1, 0.0999], [2.35, 9.0], [1.2, 0.05]])
    expected = frames_showing(np.arange(25) / 10, instants)
    assert expected.tolist() == [[3, 0], [1, 0], [23, 24], [12, 0]]  # boundaries belong to the frame starting there
    decoded = read_video(path, instants, lambda frames: frames)
    levels = decoded.frames[decoded.rows].float().mean(dim=(-1, -2, -3)).numpy()
    assert np.abs(levels - 8 * expected).max() < 2.5
    assert len(decoded.frames) == len(np.unique(expected))  # each distinct frame converted once
    assert decoded.decoded == 25  # 9.0 s is past the end: decoded to the last frame, which it gets
    early = read_video(path, np.array([0.0, 0.42]), lambda frames: frames)
    assert early.decoded < 10  # stops after the last wanted instant
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for k in range(25):
        Image.fromarray(np.full((32, 32, 3), 8 * k, dtype=np.uint8)).save(folder / f"x-{k + 1:06d}.png")
    loaded = read_frame_folder(folder, instants, lambda frames: frames, frames_fps=10)
    assert np.array_equal(loaded.frames[loaded.rows][..., 0, 0, 0].numpy(), 8 * expected)
    clips = clip_instants(np.array([1.0]), 16, 15.0)
    assert clips.shape == (1, 16) and np.isclose(clips.mean(), 1.0) and np.allclose(np.diff(clips), 1 / 15)


def test_frame_counts_follow_the_split_as_synth_does(media, stores, tmp_path):
    split = load_split(media / "split")
    synth = FeatureStore(synthesize_features(split, tmp_path / "synth.h5", SynthConfig(dim=8, fps=FPS)))
    for path in stores.values():
        store = FeatureStore(path)
        store.check_split(split)
        assert store.video_ids == synth.video_ids and np.array_equal(store.offsets, synth.offsets)
        assert store.fps == FPS and not store.simulated


def test_store_records_its_provenance(stores):
    store = FeatureStore(stores[("r2plus1d_18", "videos")])
    attrs = store.attrs
    assert attrs["backbone"] == "r2plus1d_18(width=8,blocks=[1, 1, 1, 1])" and attrs["weights"] == "random"
    assert json.loads(attrs["preprocessing"])["crop"] == [32, 32]
    assert json.loads(attrs["sampling"])["clip_len"] == 16 and json.loads(attrs["sampling"])["fps"] == FPS
    assert attrs["decoder"].startswith(f"pyav {av.__version__}")
    assert json.loads(attrs["versions"])["torch"] == torch.__version__
    from meid_bench.train.environment import cpu_name
    assert attrs["device"] == "cpu" and attrs["device_name"] == cpu_name()
    assert "cuda" not in json.loads(attrs["versions"])  # the GPU's software only where a GPU extracted
    assert store.dim == 64 and store.dtype == np.float16
    assert FeatureStore(stores[("resnet50", "frames")]).attrs["decoder"].startswith("pillow ")


def test_an_extraction_on_a_gpu_records_the_gpu_cuda_and_cudnn(monkeypatch):
    from meid_bench.extract.run import _versions
    from meid_bench.train.environment import device_record

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91300)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"NVIDIA H100 80GB HBM3 (GPU {index})")
    versions = _versions("videos", torch.device("cuda", 1))
    assert versions["cuda"] == "13.0" and versions["cudnn"] == "91300" and versions["torch"] == torch.__version__
    assert device_record(torch.device("cuda", 1))["name"] == "NVIDIA H100 80GB HBM3 (GPU 1)"


def test_video_and_frame_folder_give_close_features(stores):
    for backbone in TINY:
        a, b = FeatureStore(stores[(backbone, "videos")]), FeatureStore(stores[(backbone, "frames")])
        x = np.concatenate([a.read(v) for v in a.video_ids]).astype(np.float64)
        y = np.concatenate([b.read(v) for v in b.video_ids]).astype(np.float64)
        cosine = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert cosine.mean() > 0.995 and cosine.min() > 0.98, backbone
        assert not np.array_equal(x, y)  # lossy H.264 and JPEG: close, not identical
        # Far closer than consecutive frames of a video (1 s apart, the square has moved): the same instants.
        same = np.linalg.norm(x - y, axis=1)
        moved = np.concatenate([np.linalg.norm(np.diff(a.read(v).astype(np.float64), axis=0), axis=1)
                                for v in a.video_ids])
        assert np.median(same) < 0.4 * np.median(moved), backbone


def test_same_inputs_same_bytes_and_float32(media, stores, tmp_path):
    again = extract_features(options(media, tmp_path / "again.h5", workers=1, flush_seconds=0.0))
    assert digest(again.path) == digest(stores[("resnet50", "videos")])
    wide = extract_features(options(media, tmp_path / "f32.h5", dtype="float32"))
    assert FeatureStore(wide.path).dtype == np.float32
    half = FeatureStore(stores[("resnet50", "videos")])
    assert np.allclose(FeatureStore(wide.path).read(half.video_ids[0]), half.read(half.video_ids[0]), rtol=2e-3,
                       atol=1e-3)


_KILL_AFTER_THIRD_SHARD = """
import json, os, signal, sys
from pathlib import Path
import meid_bench.extract.write as write
from meid_bench.extract.catalog import Preprocessing
from meid_bench.extract.run import ExtractOptions, extract_features

original, written = write._fsync_write, []
def write_then_die(path, data):
    original(path, data)
    written.append(path)
    if len(written) == 3:  # the third shard is on disk, its journal line is not: a hard kill
        os.kill(os.getpid(), signal.SIGKILL)
write._fsync_write = write_then_die
settings = json.loads(sys.argv[1])
settings["preprocessing"] = Preprocessing(*[tuple(v) if isinstance(v, list) else v for v in settings["preprocessing"]])
extract_features(ExtractOptions(**{k: Path(v) if k in ("split", "videos", "out") else v for k, v in settings.items()}))
"""


def test_resume_after_a_kill_gives_the_same_bytes(media, stores, tmp_path):
    out = tmp_path / "resumed.h5"
    settings = dict(split=str(media / "split"), backbone="resnet50", videos=str(media / "videos"), out=str(out),
                    weights="random", fps=FPS, workers=2, width=8, blocks=[1, 1, 1, 1], flush_seconds=0.0,
                    preprocessing=[list(FRAME_PRE.resize), list(FRAME_PRE.crop), list(FRAME_PRE.mean),
                                   list(FRAME_PRE.std), FRAME_PRE.interpolation, FRAME_PRE.antialias])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER_THIRD_SHARD, json.dumps(settings)], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    folder = work_folder_for(out)
    assert not out.exists() and (folder / "shards" / "shard-000003.npy").is_file()
    assert len((folder / "journal.jsonl").read_text().splitlines()) == 2  # the third shard is an orphan
    with pytest.raises(MeidBenchError, match="pass --resume to continue it"):
        extract_features(options(media, out))
    with pytest.raises(MeidBenchError, match="batch = 32"):
        extract_features(options(media, out, resume=True, batch=4))
    said, ticks, totals = [], [], []
    with log_lines_to(said.append):
        report = extract_features(options(media, out, resume=True), progress=ticks.append, start=totals.append)
    assert report.resumed == 2 and report.videos == 11 and not folder.exists()
    # The progress counts this run's job: the 9 videos left, not the 2 already done.
    assert said == [f"resuming: 2 videos already extracted in {folder}"] and totals == [9] and sum(ticks) == 9
    assert digest(out) == digest(stores[("resnet50", "videos")])


def test_a_cut_journal_line_is_dropped(media, tmp_path):
    from meid_bench.extract.write import WorkFolder

    out = tmp_path / "cut.h5"
    work = WorkFolder(out, {"job": 1}, resume=False, force=False, flush_seconds=0.0)
    work.add("a", np.ones((2, 3), np.float16))
    work.add("b", np.ones((4, 3), np.float16))
    with open(work.folder / "journal.jsonl", "ab") as handle:
        handle.write(b'{"shard": "shard-000003.npy", "sha2')  # killed mid-line
    again = WorkFolder(out, {"job": 1}, resume=True, force=False, flush_seconds=0.0)
    assert set(again.done) == {"a", "b"}
    again.add("c", np.zeros((1, 3), np.float16))
    lines = (work.folder / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["videos"] == [["c", 1]]
    (work.folder / "shards" / "shard-000001.npy").write_bytes(b"damaged")
    with pytest.raises(MeidBenchError, match="sha256 differs"):
        again.assemble(["a", "b", "c"], 3, "float16", {})
    with pytest.raises(MeidBenchError, match="job = 1, this run has 2"):
        WorkFolder(out, {"job": 2}, resume=True, force=False)
    journal = work.folder / "journal.jsonl"
    journal.write_text("not json\n" + journal.read_text())
    with pytest.raises(MeidBenchError, match="journal.jsonl:1: not a journal line"):
        WorkFolder(out, {"job": 1}, resume=True, force=False)
    journal.write_text(journal.read_text().split("\n", 1)[1])
    (work.folder / "shards" / "shard-000002.npy").unlink()
    with pytest.raises(MeidBenchError, match="shard-000002.npy is missing"):
        WorkFolder(out, {"job": 1}, resume=True, force=False)
    (work.folder / "job.json").unlink()
    with pytest.raises(MeidBenchError, match="job.json is missing"):
        WorkFolder(out, {"job": 1}, resume=True, force=False)
    fresh = WorkFolder(out, {"job": 3}, resume=False, force=True)  # --force starts over
    assert not fresh.done and json.loads((fresh.folder / "job.json").read_text())["job"] == 3
    with pytest.raises(MeidBenchError, match="no video could be extracted"):
        fresh.assemble(["a"], 3, "float16", {})


def test_durations_from_the_sources_where_the_split_has_none(media, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meid_bench.build.split_io import write_split

    split = load_split(media / "split")
    tables = {name: pq.read_table(media / "split" / f"{name}.parquet") for name in ("train", "val", "test", "classes")}
    for name in ("train", "val", "test"):
        column = tables[name].schema.get_field_index("duration")
        tables[name] = tables[name].set_column(column, "duration", pa.nulls(len(tables[name]), pa.float64()))
    blank = write_split(tmp_path / "blank", tables, {"format": "meid-bench-split", "format_version": 1,
                                                    "benchmark": "toy"})
    frames_per_video = {v.video_id: int(np.ceil(v.duration * SOURCE_FPS))
                        for v in split_video_table(split).itertuples()}
    for source in ("videos", "frames"):
        store = FeatureStore(extract_features(options(media, tmp_path / f"{source}.h5", source=source,
                                                      split=blank)).path)
        for video_id, count in frames_per_video.items():  # the sources last ceil(duration * 12) frames of 1/12 s
            assert store.num_frames(video_id) == max(1, round(count / SOURCE_FPS * FPS)), (source, video_id)


# -- the store is what train reads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,source", [("resnet50", "videos"), ("resnet50", "frames"),
                                             ("r2plus1d_18", "videos"), ("r2plus1d_18", "frames")])
def test_train_uses_the_extracted_store(media, stores, tmp_path, backbone, source):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--split", str(media / "split"), "--features",
                                       str(stores[(backbone, source)]), "--recipe", "late_avg", "--epochs", "1",
                                       "--device", "cpu", "--out", str(run), "--set", "batch_size=4",
                                       "--set", "data.train_frames=3", "--set", "data.eval_frames=4"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert json.loads((run / "run.json").read_text())["features"]["dim"] == FeatureStore(stores[(backbone, source)]).dim


# -- bad inputs ------------------------------------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(main, ["features", "extract", *[str(a) for a in args]])


def assert_clean_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and fragment in result.output, result.output


@pytest.fixture
def damaged(media, tmp_path) -> Path:
    """The media with one video missing, one corrupt, one truncated frame image and one file of another id."""
    root = tmp_path / "damaged"
    (root / "videos").mkdir(parents=True)
    ids = [p.stem for p in sorted((media / "videos").iterdir())]
    for name in ids[2:]:
        os.link(media / "videos" / f"{name}.mp4", root / "videos" / f"{name}.mp4")
    (root / "videos" / f"{ids[1]}.mp4").write_bytes(os.urandom(5000))  # corrupt
    (root / "videos" / "NOTINSPLIT.mp4").write_bytes(b"")  # an id the split does not have
    (root / "frames").mkdir()
    for name in ids:
        (root / "frames" / name).mkdir()
        for image in (media / "frames" / name).iterdir():
            os.link(image, root / "frames" / name / image.name)
    shown = sorted((root / "frames" / ids[3]).iterdir())[6]  # shown at 0.5 s, the first instant at 1 fps
    data = shown.read_bytes()
    shown.unlink()
    shown.write_bytes(data[:200])  # truncated jpeg
    return root


def test_missing_and_corrupt_sources(media, damaged, tmp_path):
    ids = [p.stem for p in sorted((media / "videos").iterdir())]
    base = ["--split", media / "split", "--backbone", "resnet50", "--weights", "random", "--fps", 1]
    assert_clean_error(invoke(*base, "--videos", damaged / "videos", "--out", tmp_path / "a.h5"),
                       f"1 of 11 videos of the split have no video file (first: {ids[0]})")
    # The extraction itself runs through the library with tiny networks; the CLI's messages are the same errors.
    os.link(media / "videos" / f"{ids[0]}.mp4", damaged / "videos" / f"{ids[0]}.mp4")
    with pytest.raises(MeidBenchError, match=f"{ids[1]}.mp4: cannot decode this video"):
        extract_features(options(media, tmp_path / "b.h5", videos=damaged / "videos"))
    (damaged / "videos" / f"{ids[0]}.mp4").unlink()
    report = extract_features(options(media, tmp_path / "c.h5", videos=damaged / "videos", allow_missing=True))
    assert [v for v, _ in report.missing] == [ids[0], ids[1]] and report.ignored == 1
    store = FeatureStore(report.path)
    assert store.missing_video_ids == [ids[0], ids[1]] and store.num_videos == 9
    with pytest.raises(MeidBenchError, match=f"{ids[3]}-000007.jpg: not a readable image"):
        extract_features(options(media, tmp_path / "d.h5", source="frames", frames=damaged / "frames"))
    frames = extract_features(options(media, tmp_path / "e.h5", source="frames", frames=damaged / "frames",
                                      allow_missing=True))
    assert [v for v, _ in frames.missing] == [ids[3]]


def test_bad_options(media, tmp_path):
    base = ["--split", media / "split", "--backbone", "resnet50", "--fps", 1, "--out", tmp_path / "x.h5"]
    assert_clean_error(invoke(*base, "--weights", "random"), "give exactly one of --videos")
    assert_clean_error(invoke(*base, "--weights", "random", "--videos", media / "videos", "--frames",
                              media / "frames"), "give exactly one of --videos")
    assert_clean_error(invoke(*base, "--weights", "IMAGENET9K", "--videos", media / "videos"),
                       "not a weight set of resnet50 (default, random, IMAGENET1K_V1, IMAGENET1K_V2)")
    assert_clean_error(invoke(*base, "--weights", "random", "--videos", tmp_path / "none"), "no such folder")
    assert_clean_error(invoke("--split", media / "split", "--backbone", "resnet50", "--weights", "random",
                              "--videos", media / "videos"), "benchmark 'toy' has no recommended frame rate")
    if not torch.cuda.is_available():
        assert_clean_error(invoke(*base, "--weights", "random", "--videos", media / "videos", "--device", "cuda:1"),
                           "no CUDA GPU")
    assert_clean_error(invoke(*base, "--weights", "random", "--videos", media / "videos", "--device", "tpu"),
                       "choose auto, cpu, cuda or cuda:N")
    for bad, message in ((dict(fps=0.0), "--fps 0.0: must be a positive"), (dict(batch=0), "--batch and --workers"),
                         (dict(frames_fps=float("nan")), "--frames-fps nan")):
        with pytest.raises(MeidBenchError, match=message):
            extract_features(options(media, tmp_path / "y.h5", **bad))
    (media / "videos" / "TR0000.webm").write_bytes(b"")
    try:
        assert_clean_error(invoke(*base, "--weights", "random", "--videos", media / "videos"),
                           "two sources for video TR0000")
    finally:
        (media / "videos" / "TR0000.webm").unlink()
    (tmp_path / "x.h5").write_bytes(b"keep me")
    assert_clean_error(invoke(*base, "--weights", "random", "--videos", media / "videos"), "already exists")
    assert (tmp_path / "x.h5").read_bytes() == b"keep me"


def test_missing_pyav_names_the_extra(media, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    assert_clean_error(invoke("--split", media / "split", "--backbone", "resnet50", "--weights", "random", "--fps",
                              1, "--videos", media / "videos", "--out", tmp_path / "x.h5"),
                       "pip install 'meid-bench[extract]'")


def test_cli_extracts_with_the_real_architecture(tmp_path):
    # The published ResNet-50 architecture (random weights) and preprocessing, end to end through the CLI.
    split_dir = make_split(tmp_path / "split", sizes=(1, 1, 1))
    durations = split_video_table(load_split(split_dir))[["video_id", "duration"]].itertuples(index=False)
    expected = 0
    for seed, (video_id, duration) in enumerate(durations):
        write_video(tmp_path / f"{video_id}.mp4", seed, duration, fps=2)
        expected += max(1, round(duration * 0.1))
    result = invoke("--split", split_dir, "--videos", tmp_path, "--backbone", "resnet50", "--weights", "random",
                    "--fps", 0.1, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "3 videos" in result.output and "frames of dimension 2048" in result.output
    store = FeatureStore(split_dir / "features.h5")  # the split's default store
    assert store.total_frames == expected and store.dim == 2048
    assert json.loads(store.attrs["preprocessing"])["resize"] == [232]


# -- backbones and weights -------------------------------------------------------------------------------------------

# torchvision's documented parameter counts (``meta["num_params"]`` of each weights enum, torchvision 0.29.1).
PUBLISHED_PARAMS = {"resnet50": 25_557_032, "resnet101": 44_549_160, "r2plus1d_18": 31_505_325,
                    "r3d_18": 33_371_472, "mc3_18": 11_695_440}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_published_architectures_have_torchvisions_parameter_counts(name):
    from meid_bench.extract.backbones import build_backbone
    from meid_bench.extract.catalog import BACKBONES

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]
    assert model.dim == BACKBONES[name].dim and model.fc.in_features == model.dim


def test_a_local_weights_file(media, tmp_path):
    from meid_bench.extract.backbones import build_backbone

    tiny = build_backbone("resnet50", width=8, blocks=(1, 1, 1, 1), seed=7)
    torch.save(tiny.state_dict(), tmp_path / "mine.pth")
    report = extract_features(options(media, tmp_path / "a.h5", weights=str(tmp_path / "mine.pth")))
    attrs = FeatureStore(report.path).attrs
    assert attrs["weights"] == "file:mine.pth" and attrs["weights_sha256"] == digest(tmp_path / "mine.pth")
    seeded = extract_features(options(media, tmp_path / "b.h5"))  # random weights, seed 0: other features
    assert not np.array_equal(FeatureStore(report.path).read("TR0000"), FeatureStore(seeded.path).read("TR0000"))
    torch.save(build_backbone("r2plus1d_18", width=8, blocks=(1, 1, 1, 1)).state_dict(), tmp_path / "clip.pth")
    with pytest.raises(MeidBenchError, match="clip.pth: does not fit resnet50"):
        extract_features(options(media, tmp_path / "c.h5", weights=str(tmp_path / "clip.pth")))
    import meid_bench.extract.run as run_module
    from meid_bench.extract.weights import ResolvedWeights

    published = ResolvedWeights("IMAGENET1K_V2", tmp_path / "mine.pth", "0" * 64, FRAME_PRE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "resolve_weights", lambda info, choice: published)
        with pytest.raises(MeidBenchError, match="IMAGENET1K_V2 weights need the published architecture"):
            extract_features(options(media, tmp_path / "e.h5"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MeidBenchError, match="junk.pth: not a readable torch weights file"):
        extract_features(options(media, tmp_path / "d.h5", weights=str(tmp_path / "junk.pth")))


def test_published_weights_are_downloaded_once_and_checked(tmp_path, monkeypatch):
    from urllib.error import URLError

    from meid_bench.extract import weights as weights_module
    from meid_bench.extract.catalog import BackboneInfo, WeightSet

    payload = tmp_path / "payload.pth"
    torch.save({"w": torch.ones(3)}, payload)
    prefix = digest(payload)[:8]
    info = BackboneInfo("toynet", "frame", 3, (WeightSet("TOY_V1", f"https://example.invalid/toy-{prefix}.pth",
                                                         FRAME_PRE),), "TOY_V1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, hash_prefix))
        Path(dst).write_bytes(payload.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = weights_module.resolve_weights(info, "default")
    again = weights_module.resolve_weights(info, "toy_v1")
    assert downloads == [(f"https://example.invalid/toy-{prefix}.pth", prefix)]  # once, hash prefix checked
    assert first == again and first.label == "TOY_V1" and first.sha256 == digest(payload)
    assert first.path == tmp_path / "hub" / "checkpoints" / f"toy-{prefix}.pth"
    first.path.write_bytes(b"damaged")
    with pytest.raises(MeidBenchError, match="a damaged download"):
        weights_module.resolve_weights(info, "default")
    first.path.unlink()

    def offline(url, dst, hash_prefix=None, progress=True):
        raise URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MeidBenchError, match=r"could not download .*toy-.*pass --weights FILE"):
        weights_module.resolve_weights(info, "default")
    # A local copy of a published file is recognised by its sha256 and gets that weight set's preprocessing.
    from meid_bench.extract.catalog import BACKBONES

    v1 = BACKBONES["resnet50"].weight_set("IMAGENET1K_V1")
    monkeypatch.setattr(weights_module, "known_weight_file", lambda sha: (BACKBONES["resnet50"], v1))
    local = weights_module.resolve_weights(BACKBONES["resnet50"], str(payload))
    assert local.label == "IMAGENET1K_V1" and local.preprocessing.resize == (256,) and local.path == payload
    with pytest.raises(MeidBenchError, match="the published resnet50 IMAGENET1K_V1 weights, not resnet101 ones"):
        weights_module.resolve_weights(BACKBONES["resnet101"], str(payload))


# -- feature specification -------------------------------------------------------------------------------------------

def test_feature_specification_of_a_store(media, stores, tmp_path):
    from meid_bench.extract.spec import FEATURE_SPECS, SPEC_FPS, describe_spec, spec_of

    tiny = FeatureStore(stores[("resnet50", "videos")]).attrs
    assert describe_spec(tiny) == ("feature specification: none (backbone resnet50(width=8,blocks=[1, 1, 1, 1]) is "
                                   "in no specification)")
    assert spec_of({**tiny, "backbone": "resnet101"})[1].startswith(
        "closest is v1-frame, but weights random are not IMAGENET1K_V2 (sha256 cd907fc2...); benchmark toy has no "
        "specification")
    spec = FEATURE_SPECS["frame"].expected()
    following = {"backbone": "resnet101", "weights": "IMAGENET1K_V2", "benchmark": "charadeslt", "fps": 4.0,
                 "weights_sha256": spec["weights_sha256_prefix"] + "0" * 56, "dim": 2048,
                 "preprocessing": json.dumps(spec["preprocessing"]), "sampling": json.dumps({"fps": 4.0})}
    assert spec_of(following) == ("v1-frame", "resnet101 IMAGENET1K_V2, 4 fps, for charadeslt")
    assert describe_spec(following) == ("feature specification: v1-frame (resnet101 IMAGENET1K_V2, 4 fps, for "
                                        "charadeslt)")
    assert spec_of({**following, "fps": 2.0})[1].endswith("fps 2 where the specification has 4")
    assert spec_of({**following, "benchmark": "videolt", "fps": SPEC_FPS["videolt"]})[0] == "v1-frame"
    assert spec_of({"simulated": True}) == (None, "simulated features")
    assert spec_of({"generator": "packed from npy"}) == (None, "origin not recorded (packed from npy)")
    clip = FEATURE_SPECS["clip"].expected()
    clip_store = {**following, "backbone": "r2plus1d_18", "weights_sha256": clip["weights_sha256_prefix"] + "0",
                  "dim": 512, "preprocessing": json.dumps(clip["preprocessing"]),
                  "sampling": json.dumps({"clip_len": 16, "clip_fps": 15.0})}
    assert spec_of(clip_store)[0] == "v1-clip"
    assert "clips of 8 frames" in spec_of({**clip_store, "sampling": json.dumps({"clip_len": 8, "clip_fps": 15.0})})[1]
    # verify and features info print the line for the split's default store.
    split = tmp_path / "split"
    make_split(split, sizes=(6, 2, 3))
    (split / "features.h5").write_bytes(stores[("resnet50", "videos")].read_bytes())
    verify = CliRunner().invoke(main, ["verify", str(split)])
    assert verify.exit_code == 0 and "features.h5: feature specification: none (backbone resnet50(" in verify.output
    info = CliRunner().invoke(main, ["features", "info", str(split / "features.h5")])
    assert info.exit_code == 0 and "feature specification: none" in info.output


def test_specification_and_catalogue_load_no_torch():
    code = ("import sys, meid_bench.extract.spec, meid_bench.cli.build\n"
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_progress_counts_only_the_videos_that_will_be_extracted(media, tmp_path):
    # A try on a few videos of a large split (--allow-missing): the bar's total is those few, so its time left is
    # the job's, not that of the whole split.
    videos = tmp_path / "videos"
    videos.mkdir()
    chosen = sorted(p.name for p in (media / "videos").iterdir())[:3]
    for name in chosen:
        (videos / name).symlink_to(media / "videos" / name)
    ticks, totals = [], []
    report = extract_features(options(media, tmp_path / "few.h5", videos=videos, allow_missing=True),
                              progress=ticks.append, start=totals.append)
    assert totals == [3] and sum(ticks) == 3 and report.videos == 3 and len(report.missing) == 8


def test_a_failure_before_any_video_leaves_no_work_folder(media, tmp_path):
    # The first video cannot be decoded: nothing was extracted, so nothing is left to resume, and the next attempt
    # needs neither --resume nor --force.
    videos = tmp_path / "videos"
    videos.mkdir()
    names = sorted(p.name for p in (media / "videos").iterdir())
    first = split_video_table(load_split(media / "split"))["video_id"].iloc[0]
    for name in names:
        (videos / name).symlink_to(media / "videos" / name)
    (videos / f"{first}.mp4").unlink()
    (videos / f"{first}.mp4").write_bytes(b"not a video")
    out = tmp_path / "f.h5"
    with pytest.raises(MeidBenchError, match="cannot decode"):
        extract_features(options(media, out, videos=videos, workers=1))
    assert not work_folder_for(out).exists() and not out.exists()
    report = extract_features(options(media, out, videos=videos, workers=1, allow_missing=True))
    assert report.videos == 10 and [v for v, _ in report.missing] == [first]


@pytest.mark.parametrize("name, shape", [("resnet101", (2, 3, 64, 64)), ("resnet50", (2, 3, 64, 64)),
                                         ("r2plus1d_18", (2, 3, 4, 32, 32))])
def test_random_weights_give_features_float16_can_hold(name, shape):
    # --weights random (tests, timing): the randomly initialised ResNet-101 gave features up to 1.6e5, beyond
    # float16's 65504, so a float16 store of them held inf. Each residual branch now starts at 1/sqrt(blocks).
    from meid_bench.extract.backbones import build_backbone

    model = build_backbone(name)
    with torch.no_grad():
        features = model(torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3)
    assert torch.isfinite(features.half()).all() and features.abs().max() < 100
    assert not torch.equal(features[0], features[1])  # still a function of its input
