"""Motion-predicted bases for a video model with ``motion_base`` (:class:`mmar.tasks.video.VideoNet`).

A video codec does not code a frame from nothing: it predicts it from the frames before by their
motion and codes what the prediction misses. A ``motion_base`` model does the same in latent space.
Frame t's **base** is

- zeros for a clip's first frame (nothing came before);
- the latents of frame 0 for frame 1 (one frame shows no motion yet);
- for t ≥ 2, the σ-VAE latents of frame t − 1 moved once more by the shift that took frame t − 2 to
  frame t − 1 (:func:`mmar.tokenizers.frame_refiner.extrapolate`, measured on the frames as shown),

and the diffusion head denoises frame t's change from it, so motion that goes on is the zero
change and the model learns what breaks it: bounces, growth, a sprite that appears, a caption's
first move. :func:`motion_bases` builds the bases of whole clips for training;
:class:`MotionBase` builds them one frame at a time while sampling, from the prompt frames and
then from each generated frame as the decoder shows it. Both give the same bases for the same
frames (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..tokenizers.frame_refiner import extrapolate

Images = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def motion_bases(encode: Images, frames: torch.Tensor, latents: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Clips as shown, frames float [B, F, 3, H, W] in [0, 1], with their latents [B, F, C, rows,
    cols] → each frame's base [B, F, C, rows, cols] (module doc). ``encode``: images [M, 3, H, W]
    → latents [M, C, rows, cols]."""
    b, f = frames.shape[:2]
    base = torch.zeros_like(latents)
    if f > 1:
        base[:, 1] = latents[:, 0]
    if f > 2:
        last, before = frames[:, 1:-1].flatten(0, 1), frames[:, :-2].flatten(0, 1)
        z = torch.cat([encode(extrapolate(last[i:i + batch], before[i:i + batch])) for i in range(0, len(last), batch)])
        base[:, 2:] = z.view(b, f - 2, *z.shape[1:]).to(base.dtype)
    return base


class MotionBase:
    """The streaming form of :func:`motion_bases`: ``base()`` → the next frame's base [B, C, rows,
    cols], or None for zeros; ``push(shown [B, 3, H, W], z [B, C, rows, cols])`` after each frame
    (prompt frames first, then each generated one as decoded: ``push_latents(z)`` shows it with
    ``decode``, latents → images, e.g. a :class:`~mmar.tokenizers.frame_refiner.VideoDecoder`)."""

    def __init__(self, encode: Images, decode: Images | None = None):
        self.encode, self.decode, self.shown, self.last_z = encode, decode, [], None

    @torch.no_grad()
    def base(self) -> torch.Tensor | None:
        if self.last_z is None:
            return None
        if len(self.shown) < 2:
            return self.last_z
        return self.encode(extrapolate(self.shown[1], self.shown[0])).to(self.last_z.dtype)

    @property
    def last_shown(self) -> torch.Tensor:
        """The frame pushed last, as shown [B, 3, H, W] (after ``push_latents``: its decoding)."""
        return self.shown[-1]

    @property
    def moving(self) -> bool:
        """Whether the next base extrapolates a motion (two frames seen), not a frame or zeros."""
        return len(self.shown) == 2

    def push(self, shown: torch.Tensor, z: torch.Tensor) -> None:
        self.shown, self.last_z = [*self.shown, shown][-2:], z

    @torch.no_grad()
    def push_latents(self, z: torch.Tensor) -> None:
        if self.decode is None:
            raise ValueError("this MotionBase has no decoder: push the frames as shown")
        self.push(self.decode(z), z)
