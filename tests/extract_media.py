"""Small synthetic media for the extraction tests: moving shapes as video files and as folders of numbered frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 96, 64


def frame_image(seed: int, k: int, fps: float, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Frame ``k`` of video ``seed``: a coloured background gradient and a square that moves across it."""
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 200, size=3)
    tint = rng.integers(0, 55, size=3)
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), dtype=np.uint8)
    for c in range(3):
        image[..., c] = np.clip(base[c] + tint[c] * x / width, 0, 255)
    t = k / fps
    side = 16
    left = int((width - side) * (0.5 + 0.5 * math.sin(2 * math.pi * 0.25 * t + seed)))
    top = int((height - side) * (0.5 + 0.5 * math.cos(2 * math.pi * 0.2 * t + seed)))
    image[top:top + side, left:left + side] = (255 - base).astype(np.uint8)
    return image


def frame_count(duration: float, fps: float) -> int:
    return max(1, int(math.ceil(duration * fps)))


def write_video(path: Path, seed: int, duration: float, fps: int = 12, codec: str | None = None) -> Path:
    """An H.264 video (MPEG-4 part 2 where libx264 is absent) of ``duration`` seconds at ``fps``."""
    import av

    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        for k in range(frame_count(duration, fps)):
            frame = av.VideoFrame.from_ndarray(frame_image(seed, k, fps), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, video_id: str, seed: int, duration: float, fps: int = 12) -> Path:
    """``folder/<id>/<id>-000001.jpg`` ...: the same frames as :func:`write_video`, numbered from 1."""
    from PIL import Image

    target = folder / video_id
    target.mkdir(parents=True, exist_ok=True)
    for k in range(frame_count(duration, fps)):
        Image.fromarray(frame_image(seed, k, fps)).save(target / f"{video_id}-{k + 1:06d}.jpg", quality=95)
    return target
