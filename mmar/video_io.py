"""Video files in and out: prompt frames from MP4/WebM/… (PyAV), animated GIF or still images
(Pillow), every frame centre-cropped to a square and resized; clips written as H.264 MP4 (PyAV)
or animated GIF, atomically. GIFs are read at a constant frame rate: a frame that lasts k times
the shortest counts k times (Pillow's writer stores identical consecutive frames as one longer
frame, so a written clip reads back with its frame count, unless every frame is the same).

Every size is bounded before it allocates: a frame over ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is
refused (a decompression bomb), and at most ``max_frames`` frames are read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_write, check_target
from .errors import MmarError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}
WRITE_SUFFIXES = {".mp4", ".gif"}


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
    return text


def _constant_rate(frames: list[np.ndarray], durations: list[float], max_frames: int) -> list[np.ndarray]:
    """GIF frames that last k times the shortest one (the GIF writer merges identical consecutive
    frames this way) are repeated k times: frames at a constant rate, at most ``max_frames``."""
    base = min((d for d in durations if d > 0), default=0)
    if not base:
        return frames
    out: list[np.ndarray] = []
    for f, d in zip(frames, durations):
        out += [f] * max(1, round(d / base))
        if len(out) >= max_frames:
            break
    return out[:max_frames]


def read_frames(path: Path, side: int = 64, max_frames: int = 256) -> np.ndarray:
    """The first ``max_frames`` frames of a video, animated GIF or image → uint8 [T, side, side, 3]
    (centre-cropped squares, Lanczos-resized, alpha on white). :class:`MmarError` for a missing,
    unreadable, oversized or empty input."""
    from PIL import Image

    from .tasks.image import square_rgb

    path = Path(path)
    if not path.is_file():
        raise MmarError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
        raise MmarError(f"{path}: unknown frame format {suffix or '(none)'}; use one of "
                        f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}")
    frames: list[np.ndarray] = []
    try:
        if suffix in IMAGE_SUFFIXES:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    durations = []
                    for i in range(min(getattr(im, "n_frames", 1), max_frames)):
                        im.seek(i)
                        frames.append(square_rgb(im, side)[0])
                        durations.append(im.info.get("duration") or 0)
                    frames = _constant_rate(frames, durations, max_frames)
        else:
            import av

            with av.open(str(path)) as box:
                streams = box.streams.video
                if not streams:
                    raise MmarError(f"{path}: no video stream")
                ctx = streams[0].codec_context
                if ctx.width * ctx.height > Image.MAX_IMAGE_PIXELS:
                    raise MmarError(f"{path}: frames of {ctx.width}×{ctx.height} are too large")
                for frame in box.decode(streams[0]):
                    frames.append(square_rgb(frame.to_image(), side)[0])
                    if len(frames) >= max_frames:
                        break
    except MmarError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MmarError(f"{path}: image too large (over {Image.MAX_IMAGE_PIXELS} pixels; a decompression bomb?)") from None
    except Exception as e:  # PyAV and Pillow raise many kinds for a damaged file
        raise MmarError(f"cannot read frames from {path}: {_reason(e)}") from None
    if not frames:
        raise MmarError(f"{path}: no frames")
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: int = 8, force: bool = False) -> Path:
    """Write uint8 frames [T, H, W, 3] (H, W even for MP4) as ``path`` (.mp4: H.264 yuv420p;
    .gif: looping animation), atomically; refuses an existing file unless ``force``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise MmarError(f"{path}: write .mp4 or .gif")
    check_target(path, force)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T ≥ 1, got {frames.dtype} {frames.shape}")

    def gif(tmp: Path) -> None:
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)

    def mp4(tmp: Path) -> None:
        import av

        with av.open(str(tmp), mode="w", format="mp4") as box:
            stream = box.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    box.mux(packet)
            for packet in stream.encode():
                box.mux(packet)

    return atomic_write(path, gif if suffix == ".gif" else mp4, tmp_suffix=suffix)
