"""Moving-sprite video clips with captions from their trajectories, generated on the fly and
reproducibly from the emoji renders of :mod:`mmar.data.emoji` (same train/valid/test split by
emoji: the test clips' sprites are never trained on).

One clip: ``frames`` frames of ``size``×``size`` RGB on white, one emoji sprite (its render cut to
its bounding box, ``sprite`` pixels on its longer side) doing one of:

- ``left`` / ``right`` / ``up`` / ``down``: constant speed (2–4 px per frame) from a random start
  with room for 4 frames of travel, reflected at the canvas edge ("a fox moves left, then bounces");
- ``grows``: from about half to about 1.5× its size, centred;
- ``appears``: a blank canvas for 2–6 frames, then the sprite, still.

The caption is the emoji's CLDR short name plus the motion ("fox moves up", "red apple grows").
With ``max_words``, a caption that would be longer keeps the motion whole and only the leading
words of the name (:func:`caption_of`), so a model whose captions hold that many words never
loses the motion to truncation.
:func:`sprite_track` measures a sprite's centre and extent per frame from pixels (not from the
generator), so the same measure scores generated clips (:func:`motion_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..text.captions import words
from .emoji import load_split

MOTIONS = ("left", "right", "up", "down", "grows", "appears")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx)


@dataclass
class Clip:
    """frames uint8 [T, H, W, 3]; centres float [T, 2] (y, x) of the sprite, NaN while absent."""

    frames: np.ndarray
    caption: str
    name: str
    motion: str
    bounced: bool
    centres: np.ndarray


def cut_sprite(render: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """An emoji render uint8 [H, W, 3] on white → (RGB float [h, w, 3] in [0, 1], alpha float [h, w])
    of its bounding box scaled so the longer side is ``side`` pixels."""
    ink = (render.astype(np.int16) < 245).any(-1)
    ys, xs = np.nonzero(ink)
    if len(ys) == 0:
        raise ValueError("blank render")
    box = render[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = box.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = np.asarray(Image.fromarray(box).resize(size, Image.LANCZOS)).astype(np.float32) / 255
    alpha = np.clip((1 - rgb.min(-1)) * 4, 0, 1)  # white → transparent, anything with colour → opaque
    return rgb, alpha


def _paste(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, cy: float, cx: float) -> None:
    """Alpha-composite a sprite centred at (cy, cx) onto canvas float [H, W, 3], clipped at the edges."""
    h, w = alpha.shape
    y0, x0 = int(round(cy - h / 2)), int(round(cx - w / 2))
    ys, xs = slice(max(y0, 0), min(y0 + h, canvas.shape[0])), slice(max(x0, 0), min(x0 + w, canvas.shape[1]))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    sy, sx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
    a = alpha[sy, sx, None]
    canvas[ys, xs] = canvas[ys, xs] * (1 - a) + rgb[sy, sx] * a


class SpriteClips:
    """Clips of one split of an emoji folder: ``clip(i)`` is clip i (any i ≥ 0; the sprite is
    emoji ``i % len(sprites)``, the motion and its parameters come from ``seed`` and i)."""

    def __init__(self, root: Path, split: str, frames: int = 16, size: int = 64, sprite: int = 24, seed: int = 0,
                 max_words: int | None = None):
        if not 2 <= frames <= 4096 or not 16 <= size <= 512 or not 4 <= sprite <= size // 2:
            raise ValueError("frames must be 2..4096, size 16..512 and the sprite 4..size/2 pixels")
        if max_words is not None and max_words < MOTION_WORDS + 1:
            raise ValueError(f"max_words must be at least {MOTION_WORDS + 1} (one name word and the longest motion)")
        data = load_split(root, split)
        self.frames, self.size, self.sprite, self.seed, self.max_words = frames, size, sprite, seed, max_words
        keep = [i for i, img in enumerate(data.images) if (img < 245).any()]
        self.renders = data.images[keep]
        self.names = [(data.entries[i].get("cldr") or data.entries[i]["name"]).lower() for i in keep]

    def __len__(self) -> int:
        """Distinct sprites (clip indices cycle through them)."""
        return len(self.names)

    def clip(self, index: int, motion: str | None = None) -> Clip:
        """Clip ``index`` (deterministic); ``motion`` forces one of :data:`MOTIONS`."""
        rng = np.random.default_rng([self.seed, index])
        k = index % len(self.names)
        motion = motion or MOTIONS[int(rng.integers(len(MOTIONS)))]
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {', '.join(MOTIONS)}")
        t, s = self.frames, self.size
        base = self.sprite
        centres = np.full((t, 2), np.nan, np.float32)
        scales = np.ones(t, np.float32)
        bounced = False
        half = base / 2
        if motion in DIRECTIONS:
            dy, dx = DIRECTIONS[motion]
            speed = float(rng.uniform(2, 4))
            pos = rng.uniform(half, s - half, 2)
            vel = np.array([dy, dx], np.float64) * speed
            a = 0 if dy else 1  # the moving axis: start with room for 4 frames before the first bounce
            room = min(4 * speed, s - 2 * half)
            pos[a] = rng.uniform(half, s - half - room) if vel[a] > 0 else rng.uniform(half + room, s - half)
            for i in range(t):
                centres[i] = pos
                pos = pos + vel
                for a in range(2):
                    if not half <= pos[a] <= s - half:  # reflect at the edge
                        pos[a] = 2 * (half if pos[a] < half else s - half) - pos[a]
                        vel[a] = -vel[a]
                        bounced = True
        elif motion == "grows":
            centres[:] = s / 2
            scales = np.linspace(0.5, 1.5, t, dtype=np.float32)
        else:  # appears
            start = int(rng.integers(min(2, t - 1), min(7, t)))  # a 2-frame clip: one blank frame
            centres[start:] = rng.uniform(half, s - half, 2)
        canvas = np.ones((t, s, s, 3), np.float32)
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i in range(t):
            if np.isnan(centres[i, 0]):
                continue
            side = max(4, int(round(base * scales[i])))
            if side not in cache:
                cache[side] = cut_sprite(self.renders[k], side)
            _paste(canvas[i], *cache[side], *centres[i])
        frames = (canvas * 255).round().astype(np.uint8)
        name = self.names[k]
        return Clip(frames, caption_of(name, motion, bounced, self.max_words), name, motion, bounced, centres)


MOTION_WORDS = 4  # words in the longest motion phrase: "moves left, then bounces"


def caption_of(name: str, motion: str, bounced: bool, max_words: int | None = None) -> str:
    """The caption of a sprite ``name`` doing ``motion``: "red apple moves up, then bounces". With
    ``max_words``, the name is cut to its leading words so that the caption has at most that many
    words (as :func:`mmar.text.captions.words` counts them); the motion is always whole."""
    verb = {"grows": "grows", "appears": "appears"}.get(motion, f"moves {motion}")
    tail = verb + (", then bounces" if bounced else "")
    if max_words is not None:
        budget, named = max_words - len(words(tail)), words(name)
        if budget < 1:
            raise ValueError(f"max_words={max_words} leaves no room for the name before {tail!r}")
        if len(named) > budget:
            name = " ".join(named[:budget])
    return f"{name} {tail}"


def sprite_track(frames: np.ndarray, threshold: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """frames uint8 [T, H, W, 3] on white → (centres float [T, 2] (y, x) of the non-white pixels,
    NaN where a frame is blank; extent float [T]: the square root of their count)."""
    ink = (255 - frames.astype(np.int16)).max(-1) > threshold  # [T, H, W]
    count = ink.sum((1, 2)).astype(np.float64)
    yy, xx = np.mgrid[: frames.shape[1], : frames.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (ink * yy).sum((1, 2)) / count
        cx = (ink * xx).sum((1, 2)) / count
    centres = np.stack([cy, cx], -1)
    centres[count < 4] = np.nan
    return centres, np.sqrt(count)


def motion_of(frames: np.ndarray) -> str:
    """The motion a clip uint8 [T, H, W, 3] shows, measured from pixels: ``appears`` (blank, then
    not), ``grows`` (extent rises by a third, centre still), the dominant direction of the first
    frames' movement (before any bounce), or ``still``."""
    centres, extent = sprite_track(frames)
    present = ~np.isnan(centres[:, 0])
    if not present.any():
        return "still"
    first = int(np.argmax(present))
    if first >= 1 and present[first:].all():
        return "appears"
    seen = centres[present]
    if extent[present][-1] > 1.33 * max(extent[present][0], 1) and np.abs(seen[-1] - seen[0]).max() < 4:
        return "grows"
    steps = np.diff(seen[: min(len(seen), 5)], axis=0).sum(0)  # the first moves: before any bounce
    if np.abs(steps).max() < 2:
        return "still"
    dy, dx = steps
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"
