"""`features extract` throughput on this machine, and where its time goes: decoding versus the backbone.

Writes synthetic H.264 videos (a smooth texture panning under moving squares, libx264 CRF 23, yuv420p), then
measures, side by side in one run:

1. decoding alone: PyAV decoding every frame without conversion (the floor), and the extraction worker's whole job
   (decode, RGB conversion of the sampled frames, resize and crop) for ResNet's 4 fps sampling and for R(2+1)D's
   16-frame clips at 15 fps around each 4 fps instant; one worker thread (FFmpeg's own decoding threads on),
   source frames per second;
2. the backbones alone, published architectures with random weights (the same cost as published weights):
   ResNet-50 and ResNet-101 frames per second, R(2+1)D-18 clips per second, on preprocessed inputs;
3. `extract_features` end to end with ResNet-50 at 4 fps (all videos) and R(2+1)D-18 at --clip-fps (the first
   video): videos per second, decoded frames per second, feature frames per second, and the share of time in
   decoding (summed over the worker threads) and in the backbone.

    python perf/bench_extract.py [--videos 4] [--seconds 30] [--size 640x360] [--video-fps 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixtures import write_bench_split  # noqa: E402


def write_video(path: Path, seed: int, seconds: float, fps: int, width: int, height: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 16 + 2, width // 16 + 40, 3)).astype(np.float32)
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None],
                                              scale_factor=16, mode="bilinear")[0].permute(1, 2, 0).numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for k in range(int(seconds * fps)):
            shift = int(k * 2)  # pan two pixels a frame
            image = texture[:height, shift % 600:shift % 600 + width].astype(np.uint8).copy()
            for j in range(3):
                x = int((width - 60) * (0.5 + 0.5 * np.sin(0.05 * k + 2 * j + seed)))
                y = int((height - 60) * (0.5 + 0.5 * np.cos(0.04 * k + 3 * j)))
                image[y:y + 60, x:x + 60] = (80 * j + 40, 200 - 60 * j, 120)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_all(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--video-fps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clip-fps", type=float, default=1.0, help="feature rate of the end-to-end clip run")
    # The extrapolation (section 4): a GPU machine's CPU cores, and the benchmarks' seconds of video.
    parser.add_argument("--cores", type=int, default=16, help="CPU cores of the GPU machine extrapolated to")
    parser.add_argument("--source-fps", type=float, default=30.0, help="frame rate assumed for the real videos")
    parser.add_argument("--benchmark-seconds", nargs="*", default=["CharadesLT=214718", "Charades-Ego=233457"],
                        help="NAME=SECONDS of video (CharadesLT: the default build's videos, summed durations; "
                             "Charades-Ego: 7,860 videos x 29.7 s, the mean of the 103-video first-person sample)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import av

    from meid_bench.extract.backbones import build_backbone
    from meid_bench.extract.catalog import BACKBONES
    from meid_bench.extract.decode import read_video
    from meid_bench.extract.preprocess import normalize, resize_crop
    from meid_bench.extract.run import ExtractOptions, extract_features
    from meid_bench.extract.sample import clip_instants, feature_instants

    root = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        ids = [f"V{i:03d}" for i in range(args.videos)]
        (root / "videos").mkdir()
        for i, video_id in enumerate(ids):
            write_video(root / "videos" / f"{video_id}.mp4", i, args.seconds, args.video_fps, width, height)
        size = sum((root / "videos" / f"{v}.mp4").stat().st_size for v in ids)
        print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads; PyAV {av.__version__}")
        print(f"{args.videos} synthetic videos, {args.seconds:g} s, {width}x{height}, {args.video_fps} fps, "
              f"H.264 at {8 * size / 1000 / (args.videos * args.seconds):.0f} kbit/s")
        first = root / "videos" / f"{ids[0]}.mp4"

        # 1. Decoding alone (one thread of ours; FFmpeg's own threads as in extraction).
        source = args.videos * int(args.seconds * args.video_fps)
        start = time.perf_counter()
        decoded = sum(decode_all(root / "videos" / f"{v}.mp4") for v in ids)
        floor = time.perf_counter() - start
        assert decoded == source
        frame_pre = BACKBONES["resnet50"].default_weights.preprocessing
        clip_pre = BACKBONES["r2plus1d_18"].default_weights.preprocessing
        centres = feature_instants(args.seconds, 4.0)
        start = time.perf_counter()
        frames = [read_video(root / "videos" / f"{v}.mp4", centres, partial(resize_crop, pre=frame_pre)) for v in ids]
        frame_job = time.perf_counter() - start
        start = time.perf_counter()
        clips = read_video(first, clip_instants(centres, 16, 15.0), partial(resize_crop, pre=clip_pre))
        clip_job = time.perf_counter() - start
        print("\n1. decoding, one worker thread (FFmpeg's own decoding threads on), source frames per second")
        print(f"   PyAV decode only                            {source / floor:8.0f} frames/s  (1.00x)")
        print(f"   + RGB, resize 232, crop 224 at 4 fps        {source / frame_job:8.0f} frames/s  "
              f"({floor / frame_job:.2f}x)")
        print(f"   + RGB, resize 128x171, crop 112, clips      {clips.decoded / clip_job:8.0f} frames/s  "
              f"({(floor / source) / (clip_job / clips.decoded):.2f}x)  [{len(clips.frames)} distinct frames "
              f"for {len(centres)} clips]")

        # 2. Backbones alone, on the preprocessed frames / clips.
        print("\n2. backbones alone, published architectures, random weights, CPU float32")
        timings = {}
        with torch.inference_mode():
            batch = normalize(frames[0].frames[frames[0].rows[:16]], frame_pre)
            for name in ("resnet50", "resnet101"):
                model = build_backbone(name)
                model(batch[:2])
                start = time.perf_counter()
                model(batch)
                timings[name] = (time.perf_counter() - start) / len(batch)
                print(f"   {name:12} batch {len(batch):3}   {1 / timings[name]:8.2f} frames/s")
            model = build_backbone("r2plus1d_18")
            clip = normalize(clips.frames[clips.rows[:4]], clip_pre).permute(0, 2, 1, 3, 4).contiguous()
            model(clip[:1])
            start = time.perf_counter()
            model(clip)
            timings["r2plus1d_18"] = (time.perf_counter() - start) / len(clip)
            print(f"   r2plus1d_18  batch {len(clip):3}   {1 / timings['r2plus1d_18']:8.2f} clips/s")

        # 3. End to end.
        split = write_bench_split(root / "split", ids)
        print(f"\n3. features extract end to end, {args.workers} decoding threads")
        runs = [("resnet50", dict(), args.videos), ("r2plus1d_18", dict(fps=args.clip_fps), 1)]
        for name, extra, count in runs:
            if count < args.videos:  # the clip model is slow on a CPU: its first video only
                split = write_bench_split(root / "split-one", ids[:1] + ["X1", "X2"])
            options = ExtractOptions(split=split, backbone=name, videos=root / "videos", weights="random",
                                     fps=extra.get("fps", 4.0), out=root / f"{name}.h5", workers=args.workers,
                                     allow_missing=True, batch=32 if name == "resnet50" else 8)
            report = extract_features(options)
            busy = report.decode_seconds + report.backbone_seconds
            print(f"   {name:12} {report.videos} videos in {report.wall_seconds:6.1f} s: "
                  f"{report.videos / report.wall_seconds:.4f} videos/s, "
                  f"{report.decoded_frames / report.wall_seconds:.0f} decoded frames/s, "
                  f"{report.frames / report.wall_seconds:.2f} feature frames/s; "
                  f"decoding {report.decode_seconds:.1f} s ({report.decode_seconds / busy:.0%}), "
                  f"backbone {report.backbone_seconds:.1f} s ({report.backbone_seconds / busy:.0%})")
        # 4. Extrapolation: decoding scales with CPU cores; the backbone runs on the GPU.
        cores = torch.get_num_threads()
        print(f"\n4. EXTRAPOLATION to one GPU machine with {args.cores} CPU cores (decoding rate x {args.cores} / "
              f"{cores}, videos at {args.source_fps:g} fps, features at 4 fps); the GPU keeps up if it runs the "
              "backbone at the rate shown")
        for label, rate in (("resnet101 per frame", source / frame_job), ("r2plus1d_18 per clip",
                                                                          clips.decoded / clip_job)):
            machine = rate * args.cores / cores  # source frames per second
            needed = machine / args.source_fps * 4.0  # feature frames (clips) per second the GPU must sustain
            times = ", ".join(f"{name} {float(seconds) * args.source_fps / machine / 3600:.1f} h"
                              for name, seconds in (item.split("=") for item in args.benchmark_seconds))
            print(f"   {label:22} {times}; the GPU must run >= {needed:.0f} feature frames (clips)/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
