"""Frame-autoregressive video on continuous latents (FAR / Ca2-VDM style): the σ-VAE
(``image_vae``) per frame + one :class:`~mmar.transformer.CausalTransformer` with block-causal
frames + a :class:`~mmar.heads.DiffusionHead` that denoises every token of a frame at once.

Layout: a caption prefix [P] (bidirectional), then frames of N = rows × cols latent tokens; a
token sees its own frame and every earlier one (``tokens_per_frame = N``). Each token's input is
its latent (noisy or clean) plus a time embedding: of its frame's diffusion time t ∈ [0, 1], or
a learned **clean** embedding for a finished frame (FAR's clean-context timestep); with
``local`` > 0, plus a map of the previous clean frame's latents around the token. With
``residual``, the head denoises each frame's change from the clean frame before it; with
``motion_base`` too, from that frame moved on by its last motion (:mod:`mmar.tasks.video_base`,
built from the frames as shown, so sampling needs the σ-VAE: :func:`motion_base`).

Training (diffusion forcing, as FAR): every frame of a clip gets its own t and noise (flow
matching: x_t = (1 − t)·x + t·ε), a share ``clean_p`` of frames stays clean with the clean
embedding, and the head predicts ε − x for the noisy frames from (x_t, t, the trunk's hidden state
at that token).

Sampling (:func:`generate_frames`, over :func:`mmar.generation.denoise_frames`): the caption and
any prompt frames are written to the kv-cache once (:class:`~mmar.generation.FrameCache`); each
new frame starts as noise and takes ``steps`` Euler steps, each a **peek** through the trunk
(``commit=False``: the noisy frame attends to the cached clean context and to itself, nothing is
written), so the context is computed once and reused by every denoising step; the finished frame
is then written to the cache with the clean embedding. ``cached=False`` recomputes the whole
context at every step instead (:class:`~mmar.generation.FrameRecompute`: same frames up to float
rounding). With a ``window`` of W frames the cache is a ring of W frames plus the caption, which
stays visible (the cache's ``sink``), so a rollout of any length runs in bounded memory. With
``memory``, frames that left the window are not forgotten outright: their 2 × 2-pooled latents
are summed into a fixed-size long-term context (:class:`FrameState`) that every later frame reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import find_checkpoint, load_task_model
from ..errors import MmarError
from ..generation import FrameCache, FrameRecompute, denoise_frames
from ..heads import DiffusionHead, timestep_embedding
from ..text.captions import CaptionVocab
from ..tokenizers.base import LoadedTokenizer
from ..tokenizers.frame_refiner import FrameRefiner, FrameRefinerConfig, VideoDecoder, load_refiner
from ..tokenizers.image_cnn import from_uint8, to_uint8
from ..transformer import CausalTransformer
from .image_latent import export_config as latent_export_config
from .image_latent import latent_parts
from .video_base import MotionBase

NAME = "video-64"
MAX_WINDOW = 4096


class VideoNet(nn.Module):
    """Trunk + time embeddings + diffusion head as one module (one state dict, one DDP wrapper).

    ``local`` = k > 0 adds to each token's input a linear map of the previous clean frame's
    latents in the k × k cells around it (zero for a window's first frame), so that copying or
    shifting what was there needs no attention to be learnt first; its weights start at zero.

    ``residual``: the head denoises each frame's *change* from the clean frame before it (from
    zeros for a window's first frame), so "nothing moved" is the zero change; the trunk reads a
    noisy frame as the previous frame plus its noisy change (at t = 0, the frame itself).

    ``memory`` = W > 0 (the attention window, in frames) adds a long-term context: frames that
    have left a frame's window are pooled over 2 × 2 cells, and a map of their mean and of the
    newest of them is added to every token of the frame (zero-initialised; zero before any frame
    has left). Its state is bounded (:class:`FrameState`), so rollouts of any length keep it.

    ``motion_base`` (with ``residual``): the change is taken from each frame's motion-predicted
    base (:mod:`mmar.tasks.video_base`: the frame before moved on by its last motion) instead of
    the frame before, so motion that goes on is the zero change. The bases come from outside
    (they need the frames as shown): ``forward(..., base=)`` and a :class:`~mmar.tasks.video_base.MotionBase`
    when sampling."""

    def __init__(self, trunk: CausalTransformer, head: DiffusionHead, grid: tuple[int, int], local: int = 0,
                 residual: bool = False, memory: int = 0, motion_base: bool = False):
        super().__init__()
        d, c = trunk.cfg.dim, head.cfg.latent_dim
        self.trunk, self.head, self.grid, self.local, self.residual, self.memory = trunk, head, grid, local, residual, memory
        self.motion_base = motion_base
        self.tokens_per_frame = grid[0] * grid[1]
        self.time = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.clean = nn.Parameter(torch.zeros(d))
        if local:
            self.prev = nn.Linear(local * local * c, d)
            nn.init.zeros_(self.prev.weight)
            nn.init.zeros_(self.prev.bias)
        if memory:
            self.longterm = nn.Linear(2 * c, d)
            nn.init.zeros_(self.longterm.weight)
            nn.init.zeros_(self.longterm.bias)

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        """Frames [..., N, C] → each token replaced by the mean of its 2 × 2 cell [..., N, C]: the
        long-term context's compression (4× fewer distinct values)."""
        rows, cols = self.grid
        lead, c = z.shape[:-2], z.shape[-1]
        g = z.reshape(-1, rows // 2, 2, cols // 2, 2, c).mean((2, 4), keepdim=True)
        return g.expand(-1, rows // 2, 2, cols // 2, 2, c).reshape(*lead, rows * cols, c)

    def memory_embedding(self, mean: torch.Tensor, newest: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The long-term context of frames: the mean and the newest of the pooled frames that have
        left the window, each [..., N, C], and how many left, count [...] → vectors [..., N, D]
        (zero while none has left)."""
        e = self.longterm(torch.cat([mean, newest], -1).to(self.longterm.weight.dtype))
        return e * (count > 0).to(e.dtype)[..., None, None]

    def prev_embedding(self, prev: torch.Tensor) -> torch.Tensor:
        """Previous clean frames [B, F, N, C] → per-token vectors [B, F · N, D] (zeros without ``local``)."""
        b, f, n, c = prev.shape
        if not self.local:
            return prev.new_zeros(b, f * n, self.clean.shape[0])
        img = prev.reshape(b * f, *self.grid, c).permute(0, 3, 1, 2)
        cells = F.unfold(img, self.local, padding=self.local // 2).transpose(1, 2)  # [B·F, N, C·k·k]
        return self.prev(cells.to(self.prev.weight.dtype)).reshape(b, f * n, -1)

    def time_embedding(self, t: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor:
        """Per-token time vectors [B, frames · N, D]: of the times t [B, frames] (None: clean frames)."""
        n, d = self.tokens_per_frame, self.clean.shape[0]
        if t is None:
            return self.clean.expand(batch, frames * n, d)
        e = self.time(timestep_embedding(t.flatten(), 256).to(self.clean.dtype)).view(batch, frames, 1, d)
        return e.expand(batch, frames, n, d).reshape(batch, frames * n, d)

    def window_memory(self, older: torch.Tensor, frames: int) -> torch.Tensor:
        """The long-term context of each of ``frames`` frames that follow the clean frames ``older``
        [B, S, N, C]: frame j's covers the frames that left its window of ``memory`` frames, the
        first S + j − memory + 1 of them (as :class:`FrameInputs` builds it frame by frame)
        → [B, frames, N, D]."""
        b, s_, n, c = older.shape
        pooled = self.pooled(older)
        total = torch.cat([pooled.new_zeros(b, 1, n, c), pooled.cumsum(1)], 1)  # [B, S + 1, N, C]: sums of the first k
        first = torch.cat([pooled.new_zeros(b, 1, n, c), pooled], 1)  # [B, S + 1]: index k → the k-th pooled frame (1-based)
        count = (s_ + torch.arange(frames) - self.memory + 1).clamp(0, s_)  # [frames]
        mean = total[:, count] / count.clamp_min(1)[None, :, None, None].to(total.dtype)
        return self.memory_embedding(mean, first[:, count], count[None].expand(b, -1))

    def forward(self, latents: torch.Tensor, prefix: torch.Tensor, clean_p: float | torch.Tensor = 0.1,
                generator: torch.Generator | None = None, older: torch.Tensor | None = None,
                offset: int | None = None, base: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss: clips of latents [B, F, N, C] after captions prefix [B, P] → mean squared
        error of the head's ε − x on the noisy frames (x: the frame, or with ``residual`` its change;
        each frame its own t; a share ``clean_p`` stays clean and is context only; a tensor [F]
        gives each frame of the window its own probability of being clean). ``older``
        [B, S, N, C]: the clip's frames before these (with ``memory``, its long-term context).
        ``offset``: the frames' positions start that many frames after the caption, as in a
        rollout (default: S, the clip's own). ``base`` [B, F, N, C]: the frames' motion-predicted
        bases (required with ``motion_base``, ignored otherwise)."""
        b, f, n, c = latents.shape
        if self.motion_base and (base is None or base.shape != latents.shape):
            raise MmarError(f"a motion_base model needs bases shaped like its latents {tuple(latents.shape)}")
        t = torch.rand(b, f, generator=generator).to(latents)
        clean = (torch.rand(b, f, generator=generator) < torch.as_tensor(clean_p).cpu()).to(latents.device)
        eps = torch.randn(latents.shape, generator=generator).to(latents)
        if not self.motion_base:
            base = torch.cat([torch.zeros_like(latents[:, :1]), latents[:, :-1]], 1) if self.residual else 0.0
        target = latents - base  # what the head denoises: the frame, or its change from its base
        noisy = (1 - t)[..., None, None] * target + t[..., None, None] * eps
        xt = torch.where(clean[..., None, None], latents, base + noisy)
        extra = torch.where(clean.repeat_interleave(n, 1)[..., None], self.clean, self.time_embedding(t, b, f))
        if self.local:  # the clean frame before each (as at inference); the window's first has none
            prev = self.prev_embedding(latents[:, :-1])
            extra = extra + torch.cat([prev.new_zeros(b, n, prev.shape[-1]), prev], dim=1)
        if self.memory:
            extra = extra + self.window_memory(latents.new_zeros(b, 0, n, c) if older is None else older, f).flatten(1, 2)
        offset = (0 if older is None else older.shape[1]) if offset is None else offset
        h = self.trunk(latents=xt.flatten(1, 2), prefix=prefix, tokens_per_frame=n, extra=extra, offset=offset * n)[:, prefix.shape[1]:]
        keep = ~clean.repeat_interleave(n, 1).flatten()
        if not bool(keep.any()):
            return h.sum() * 0.0
        pred = self.head.predict(noisy.flatten(0, 2)[keep], t.repeat_interleave(n, 1).flatten()[keep], h.flatten(0, 1)[keep])
        want = (eps - target).flatten(0, 2)[keep]
        return F.mse_loss(pred.float(), want.float())


@dataclass(frozen=True)
class FrameState:
    """What the frames committed so far leave for the next one (bounded whatever the rollout's
    length): the last clean frame [rows, N, C] (for ``local``), the pooled frames still in the
    window (at most ``memory`` − 1), and the sum, count and newest of the pooled frames that left."""

    last: torch.Tensor | None = None
    recent: tuple[torch.Tensor, ...] = ()
    total: torch.Tensor | None = None
    count: int = 0
    newest: torch.Tensor | None = None


class FrameInputs:
    """The :class:`~mmar.generation.FrameEmbedding` of a :class:`VideoNet` for ``rows`` rows: the
    time (or clean) embedding, the previous clean frame's map (``local``) and the long-term
    context (``memory``), from a :class:`FrameState`."""

    def __init__(self, net: VideoNet, rows: int):
        self.net, self.rows = net, rows

    def __call__(self, t: float | None, state: FrameState | None) -> torch.Tensor:
        net, state = self.net, state or FrameState()
        e = net.time_embedding(None if t is None else torch.full((self.rows, 1), t), self.rows, 1)
        if net.local and state.last is not None:
            e = e + net.prev_embedding(state.last[:, None])
        if net.memory and state.count:
            count = torch.full((self.rows,), state.count)
            e = e + net.memory_embedding(state.total / state.count, state.newest, count)
        return e

    def update(self, state: FrameState | None, z: torch.Tensor) -> FrameState:
        state = state or FrameState()
        if not self.net.memory:
            return FrameState(last=z)
        recent = (*state.recent, self.net.pooled(z))
        if len(recent) < self.net.memory:
            return FrameState(z, recent, state.total, state.count, state.newest)
        gone, recent = recent[0], recent[1:]  # it leaves the next frame's window
        total = gone if state.total is None else state.total + gone
        return FrameState(z, recent, total, state.count + 1, gone)


@dataclass
class VideoModel:
    """A caption → video model with its vocabulary, latent grid, window and VAE identity."""

    model: VideoNet
    vocab: CaptionVocab
    grid: tuple[int, int]
    window: int
    model_id: str = NAME
    weights: str = ""
    tokenizer_weights: str = ""

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def latent_dim(self) -> int:
        return self.model.head.cfg.latent_dim

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def export_config(model: dict, head: dict, vocab: CaptionVocab, latent_dim: int, grid: tuple[int, int], window: int,
                  tokenizer: LoadedTokenizer | None = None, name: str = NAME, local: int = 0, residual: bool = False,
                  memory: bool = False, motion_base: bool = False) -> dict:
    """The ``config.json`` of a video checkpoint (kind ``video``): a latent model's plus its
    ``window`` and, when used, the ``local`` previous-frame neighbourhood, ``residual``, the
    long-term ``memory`` and the ``motion_base`` (see :class:`VideoNet`)."""
    return latent_export_config(model, head, vocab, latent_dim, grid, tokenizer, name, kind="video", window=window,
                                **({"local": local} if local else {}), **({"residual": True} if residual else {}),
                                **({"memory": True} if memory else {}), **({"motion_base": True} if motion_base else {}))


def from_config(config: dict, where: str = "config") -> VideoModel:
    """A checked config dict (see :func:`export_config`) → a :class:`VideoModel` with fresh weights."""
    p = latent_parts(config, where, "video", "video model", objectives=("flow",), default_name=NAME)
    window, local, residual = config.get("window"), config.get("local", 0), config.get("residual", False)
    memory, motion_base = config.get("memory", False), config.get("motion_base", False)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW or max(p.grid) > 64:
        raise MmarError(f"{where}: window must be 1..{MAX_WINDOW} and the grid at most 64 a side")
    if local not in (0, 1, 3, 5) or not isinstance(residual, bool) or not isinstance(memory, bool):
        raise MmarError(f"{where}: local must be 0, 1, 3 or 5, and residual and memory true or false")
    if not isinstance(motion_base, bool) or (motion_base and not residual):
        raise MmarError(f"{where}: motion_base must be true or false, and true only with residual")
    if memory and (p.grid[0] % 2 or p.grid[1] % 2):
        raise MmarError(f"{where}: the long-term memory pools 2 × 2 cells: the latent grid must be even, got {p.grid}")
    return VideoModel(VideoNet(p.trunk, p.head, p.grid, local, residual, window if memory else 0, motion_base), p.vocab, p.grid,
                      window, p.name, tokenizer_weights=p.tokenizer_weights)


def load_video(path: Path | None = None) -> VideoModel:
    """A ``video`` checkpoint directory (default: ``video-64`` on the checkpoint search path)."""
    return load_task_model(find_checkpoint(NAME, path), from_config, "video")


# -- sampling -----------------------------------------------------------------------------------
@torch.no_grad()
def generate_frames(vm: VideoModel, captions: list[str], frames: int, prompt: torch.Tensor | None = None,
                    steps: int = 8, cfg_scale: float = 1.0, temperature: float = 1.0, seed: int = 0,
                    cached: bool = True, on_frame=None, base: MotionBase | None = None,
                    motion_temperature: float | None = None) -> torch.Tensor:
    """``frames`` new frames per caption after optional prompt latents [B, K, C, rows, cols] →
    normalised latents [B, frames, C, rows, cols] (decode each frame with the VAE), through
    :func:`mmar.generation.denoise_frames`. ``cached=False`` recomputes the context at every step
    (:class:`~mmar.generation.FrameRecompute`, the reference). ``on_frame(i, latents [B, C, rows, cols])``
    is called as each frame is finished (progress, streaming); the return value holds every frame.
    A ``motion_base`` model needs ``base`` (:func:`motion_base`), fed the same prompt; its frames
    whose base extrapolates a seen motion start from noise × ``motion_temperature`` (None:
    ``temperature``), the others (the first two of a clip from a caption alone) × ``temperature``."""
    temps = (temperature,) if motion_temperature is None else (temperature, motion_temperature)
    if not (1 <= steps <= 1000 and all(math.isfinite(t) and t >= 0 for t in temps) and math.isfinite(cfg_scale)):
        raise MmarError("steps must be 1..1000, temperatures ≥ 0 and the CFG scale finite")
    b, n, c = len(captions), vm.tokens_per_frame, vm.latent_dim
    if prompt is not None and (prompt.dim() != 5 or prompt.shape[0] != b or prompt.shape[2:] != (c, *vm.grid)):
        raise MmarError(f"prompt latents must be [{b}, K, {c}, {vm.grid[0]}, {vm.grid[1]}], got {tuple(prompt.shape)}")
    if vm.model.motion_base and base is None:
        raise MmarError("this video model predicts each frame from the motion before it: pass base=motion_base(...)")
    guided = cfg_scale != 1.0
    cond = vm.vocab.batch(captions)
    prefix = torch.cat([cond, vm.vocab.null_batch(b)]) if guided else cond
    net = vm.model

    context = (FrameCache if cached else FrameRecompute)(net.trunk, prefix, n, vm.window, FrameInputs(net, prefix.shape[0]))
    for k in range(0 if prompt is None else prompt.shape[1]):
        z = prompt[:, k].flatten(2).transpose(1, 2)
        context.commit(torch.cat([z, z]) if guided else z)
    grid = lambda z: z.transpose(1, 2).reshape(b, c, *vm.grid)  # noqa: E731  [B, N, C] → [B, C, rows, cols]
    rows = lambda z: z.flatten(2).transpose(1, 2)  # noqa: E731  [B, C, rows, cols] → [B, N, C]

    def done(i: int, z: torch.Tensor) -> None:
        if base is not None:
            base.push_latents(grid(z))
        if on_frame is not None:
            on_frame(i, grid(z))

    if net.motion_base:
        start = lambda: None if (z := base.base()) is None else rows(z)  # noqa: E731
    elif net.residual:  # the frame before, as committed ([2B, ...] when guided)
        start = lambda: None if context.last_frame is None else context.last_frame[:b]  # noqa: E731
    else:
        start = None
    temp = temperature
    if net.motion_base and motion_temperature is not None:
        temp = lambda: motion_temperature if base.moving else temperature  # noqa: E731
    out = denoise_frames(context, net.head, frames, (b, n, c), steps, cfg_scale, temp,
                         torch.Generator().manual_seed(seed), done, start)
    return out.transpose(2, 3).reshape(b, frames, c, *vm.grid)


def motion_base(vm: VideoModel, tok: LoadedTokenizer, refiner: FrameRefiner | None = None, prompt: np.ndarray | None = None,
                prompt_latents: torch.Tensor | None = None) -> MotionBase | None:
    """For a ``motion_base`` model (None for any other): a :class:`~mmar.tasks.video_base.MotionBase`
    that has seen the uint8 ``prompt`` frames [B, K, H, W, 3] with their latents ``prompt_latents``
    [B, K, C, rows, cols] and shows each generated frame as :func:`frame_decoder` does (``refiner``)."""
    if not vm.model.motion_base:
        return None
    if not tok.speaks(vm.tokenizer_weights):
        raise MmarError(f"this video model was trained on σ-VAE weights {vm.tokenizer_weights}, not {tok.weights}")
    mb = MotionBase(lambda x: tok.model.encode(x).latents, frame_decoder(tok, refiner, prompt, prompt_latents))
    for k in range(0 if prompt is None else prompt.shape[1]):
        mb.push(from_uint8(prompt[:, k]), prompt_latents[:, k])
    return mb


def refiner_for(tok: LoadedTokenizer, path: Path | None = None, use: bool = True) -> FrameRefiner | None:
    """The temporal decoder (:mod:`mmar.tokenizers.frame_refiner`) for ``tok``'s latents: a
    trained one from ``path`` (an error unless it was trained on ``tok``'s weights), else motion
    compensation alone (no weights); ``use`` False: None, plain per-frame decoding."""
    if not use:
        return None
    if path is None:
        return FrameRefiner(FrameRefinerConfig(channels=())).eval()
    loaded = load_refiner(Path(path))
    if not tok.speaks(loaded.vae_weights):
        raise MmarError(f"{path} refines VAE weights {loaded.vae_weights}, not {tok.weights} ({tok.model_id})")
    return loaded.model


def frame_decoder(tok: LoadedTokenizer, refiner: FrameRefiner | None = None, prompt: np.ndarray | None = None,
                  prompt_latents: torch.Tensor | None = None) -> VideoDecoder:
    """A streaming decoder of generated latents (:class:`~mmar.tokenizers.frame_refiner.VideoDecoder`:
    each call takes a frame's latents [B, C, rows, cols] → float [B, 3, H, W]) that continues
    after the last of the uint8 ``prompt`` frames [B, K, H, W, 3] (latents ``prompt_latents``
    [B, K, C, rows, cols]); with no prompt, or no ``refiner``, frames are decoded one by one."""
    prev = prev_z = None
    if refiner is not None and prompt is not None and prompt.shape[1]:
        prev = from_uint8(prompt[:, -1])
        prev_z = prompt_latents[:, -1]
    return VideoDecoder(tok.model.decode_latents, refiner, prev, prev_z)


def frame_display(base: MotionBase | None, tok: LoadedTokenizer, refiner: FrameRefiner | None = None,
                  prompt: np.ndarray | None = None, prompt_latents: torch.Tensor | None = None):
    """What to show of each frame :func:`generate_frames` finishes (its ``on_frame`` latents [B, C,
    rows, cols] → float [B, 3, H, W]): a motion_base model's ``base`` (:func:`motion_base`, fed the
    same prompt) has decoded it already, so each frame is decoded once; without one, a
    :func:`frame_decoder` of its own."""
    if base is not None:
        return lambda z: base.last_shown
    return frame_decoder(tok, refiner, prompt, prompt_latents)


def latents_to_frames(tok: LoadedTokenizer, z: torch.Tensor, refiner: FrameRefiner | None = None,
                      prompt: np.ndarray | None = None, prompt_latents: torch.Tensor | None = None) -> np.ndarray:
    """σ-VAE latents [B, F, C, rows, cols] → uint8 frames [B, F, H, W, 3] (``tok``: the image_vae
    tokenizer; with a ``refiner``, each frame refined from the one before, the first from the last
    ``prompt`` frame as in :func:`frame_decoder`)."""
    dec = frame_decoder(tok, refiner, prompt, prompt_latents)
    return np.stack([to_uint8(dec(z[:, k])) for k in range(z.shape[1])], 1)


def frames_to_latents(tok: LoadedTokenizer, frames: np.ndarray) -> torch.Tensor:
    """uint8 frames [B, F, H, W, 3] → σ-VAE latents [B, F, C, rows, cols] (``tok``: the image_vae tokenizer)."""
    b, f = frames.shape[:2]
    z = tok.model.encode(from_uint8(frames.reshape(b * f, *frames.shape[2:]))).latents
    return z.view(b, f, *z.shape[1:])
