"""Caption-conditioned image generation and infilling: the image tokenizer (``image_vq``) + one
:class:`~mmar.transformer.CausalTransformer` + :mod:`mmar.generation`.

Layout of one example (K = 1 codebook; the 8×8 code grid read in raster order, T = 64)::

    prefix: caption word ids [P]   (bidirectional; P = the vocabulary's max_len, padded with <pad>)
    stream: plain generation  x0 x1 … x63
            infilling (CM3)   the :class:`~mmar.patterns.CausalMasking` of the raster sequence, one
                              span per box row (adjacent full-width rows merge into one span):
                              U0 m0 U1 m1 … Un  m0 S0  m1 S1 …

The last prefix position predicts the first stream token. Training mixes both kinds of rows
(:func:`training_streams`, :class:`TrainingLoss`); captions are dropped to ``<null>`` for
classifier-free guidance, whose batches are ``[cond; uncond]`` (:mod:`mmar.generation`).
Special ids: :class:`~mmar.patterns.SpecialIds` with ``max_spans`` = the grid's rows, so any box
fits (8 mask ids for an 8×8 grid; vocabulary 1000 + 10).

Infilling (:func:`infill_codes`) feeds the prefix and the rearranged stream up to the first
span's second mask token (:meth:`CausalMasking.prompt_steps`), generates each span's known
number of tokens with :func:`~mmar.generation.fill_spans` (which feeds the next mask token
between spans), and restores the grid with :meth:`CausalMasking.restore`; tokens outside the box are copied, never regenerated
(checked token by token).

Images on the way in (:func:`load_image`): any size and mode Pillow reads; the first frame,
alpha composited on white, centre-cropped to a square (the shorter side), resized to 64×64 with
Lanczos. A pixel box maps through the same crop and scale to every grid cell it touches
(:func:`pixel_box_to_grid`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import atomic_write, check_target
from ..checkpoint import find_checkpoint, load_task_model
from ..errors import MmarError
from ..generation import CachedStepper, SamplingConfig, Sampler, UncachedStepper, fill_spans, generate, last_logits
from ..heads import codebook_vocab
from ..patterns import CausalMasking, SpecialIds
from ..text.captions import CaptionVocab
from ..tokenizers.base import LoadedTokenizer, load_tokenizer
from ..transformer import TRUNK_BOUNDS, CausalTransformer, TransformerConfig, checked_trunk

NAME, TOKENIZER_NAME = "image-ar-64", "image-vq-64"
Box = tuple[int, int, int, int]  # token grid (r0, c0, r1, c1), half-open


@dataclass
class ImageAR:
    """A caption → image-token model with what it needs to run: its caption vocabulary, special
    ids, code grid, and the identity of the tokenizer it was trained on."""

    model: CausalTransformer
    vocab: CaptionVocab
    ids: SpecialIds
    grid: tuple[int, int]
    model_id: str = NAME
    weights: str = ""
    tokenizer_weights: str = ""  # 8 hex digits of the image_vq weights it was trained on

    @property
    def codebook_size(self) -> int:
        return self.ids.codebook_size

    @property
    def tokens(self) -> int:
        """T: tokens per image (rows × cols)."""
        return self.grid[0] * self.grid[1]

    @property
    def layout(self) -> CausalMasking:
        return CausalMasking(self.ids)

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# -- config / checkpoint ------------------------------------------------------------------------
def export_config(model: dict, vocab: CaptionVocab, codebook_size: int, grid: tuple[int, int],
                  tokenizer: LoadedTokenizer | None = None, name: str = NAME) -> dict:
    """The ``config.json`` of an image AR checkpoint (kind ``image_ar``). ``model``: dim,
    n_layers, n_heads (, mlp_hidden) of the Transformer."""
    return {"kind": "image_ar", "name": name,
            "model": {k: model[k] for k in TRUNK_BOUNDS if k in model},
            "codebook_size": codebook_size, "grid": list(grid), "max_spans": grid[0],
            "captions": vocab.to_dict(),
            "tokenizer": {"name": tokenizer.model_id, "weights": tokenizer.weights} if tokenizer else {}}


def from_config(config: dict, where: str = "config") -> ImageAR:
    """A checked config dict (see :func:`export_config`) → an :class:`ImageAR` with fresh weights."""
    if not isinstance(config, dict) or config.get("kind") != "image_ar":
        kind = config.get("kind") if isinstance(config, dict) else type(config).__name__
        raise MmarError(f"{where} holds a {kind!r:.40} checkpoint, not an image AR model")
    m = checked_trunk(config.get("model"), where)
    size, grid, spans = config.get("codebook_size"), config.get("grid"), config.get("max_spans")
    ints = lambda v, lo, hi: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi  # noqa: E731
    if not (ints(size, 2, 1 << 20) and isinstance(grid, list) and len(grid) == 2 and all(ints(g, 1, 256) for g in grid)
            and ints(spans, grid[0], 256)):
        raise MmarError(f"{where}: codebook_size, grid or max_spans malformed")
    vocab = CaptionVocab.from_dict(config.get("captions"), where)
    ids = SpecialIds(size, max_spans=spans)
    try:
        cfg = TransformerConfig(**m, vocab=codebook_vocab(size, 1, ids), prefix_vocab=len(vocab))
        if cfg.dim % cfg.n_heads or cfg.head_dim % 2:
            raise ValueError("dim must be a multiple of 2 × n_heads")
    except (TypeError, ValueError) as e:
        raise MmarError(f"{where}: {e}") from None
    tok = config.get("tokenizer") or {}
    return ImageAR(CausalTransformer(cfg), vocab, ids, (grid[0], grid[1]), str(config.get("name", NAME))[:64],
                   tokenizer_weights=str(tok.get("weights", ""))[:16])


def load_image_ar(path: Path | None = None) -> ImageAR:
    """An ``image_ar`` checkpoint directory (default: ``image-ar-64`` on the checkpoint search path)."""
    return load_task_model(find_checkpoint(NAME, path), from_config, "image AR")


def load_image_tokenizer(path: Path | None = None) -> LoadedTokenizer:
    """The ``image_vq`` tokenizer (default: ``image-vq-64`` on the checkpoint search path)."""
    return load_tokenizer("image_vq", find_checkpoint(TOKENIZER_NAME, path))


def check_pair(ar: ImageAR, tok: LoadedTokenizer) -> None:
    """:class:`MmarError` unless ``tok`` is the tokenizer ``ar`` was trained on (weights hash,
    codebook size and grid)."""
    if ar.tokenizer_weights and tok.weights != ar.tokenizer_weights:
        raise MmarError(f"the image model was trained on tokenizer weights {ar.tokenizer_weights}, "
                        f"not {tok.weights} ({tok.model_id}); pass the matching --tokenizer-checkpoint")
    if tok.model.codebook_size != ar.codebook_size or tuple(tok.cfg.grid) != ar.grid:
        raise MmarError(f"tokenizer {tok.model_id} has {tok.model.codebook_size} codes on a {tok.cfg.grid} grid; "
                        f"the image model expects {ar.codebook_size} on {ar.grid}")


# -- training -----------------------------------------------------------------------------------
def box_spans(grid: tuple[int, int], box: Box) -> list[tuple[int, int]]:
    """A token-grid box (r0, c0, r1, c1), half-open → its spans of the raster sequence, one per
    row (merged where rows touch: full-width boxes become one span)."""
    rows, cols = grid
    r0, c0, r1, c1 = box
    if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
        raise MmarError(f"box {box} is empty or outside the {rows}×{cols} token grid")
    spans: list[tuple[int, int]] = []
    for r in range(r0, r1):
        a, b = r * cols + c0, r * cols + c1
        if spans and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def mask_spans(grid: tuple[int, int], mask: torch.Tensor, max_spans: int) -> list[tuple[int, int]]:
    """A cell mask bool [rows · cols] (raster order, True = regenerate) → the runs of True cells as
    spans; while there are more than ``max_spans``, the two runs with the smallest gap merge (the
    cells between them are regenerated too)."""
    flat = mask.flatten().bool().tolist()
    if len(flat) != grid[0] * grid[1]:
        raise MmarError(f"a mask of {len(flat)} cells does not fit the {grid[0]}×{grid[1]} token grid")
    spans: list[list[int]] = []
    for i, on in enumerate(flat):
        if on and spans and spans[-1][1] == i:
            spans[-1][1] = i + 1
        elif on:
            spans.append([i, i + 1])
    if not spans:
        raise MmarError("the mask covers no token cell: nothing to regenerate")
    while len(spans) > max_spans:
        k = min(range(len(spans) - 1), key=lambda j: spans[j + 1][0] - spans[j][1])
        spans[k : k + 2] = [[spans[k][0], spans[k + 1][1]]]
    return [(a, b) for a, b in spans]


def region_spans(ar: ImageAR, region: Box | torch.Tensor) -> list[tuple[int, int]]:
    """A token-grid box, or a cell mask bool [rows · cols] → the spans infilling regenerates."""
    if isinstance(region, torch.Tensor):
        return mask_spans(ar.grid, region, ar.ids.max_spans)
    return box_spans(ar.grid, region)


def box_mask(grid: tuple[int, int], box: Box) -> torch.Tensor:
    """bool [rows · cols]: True inside the box (raster order)."""
    m = torch.zeros(grid, dtype=torch.bool)
    m[box[0]:box[2], box[1]:box[3]] = True
    return m.flatten()


def random_box(grid: tuple[int, int], gen: torch.Generator) -> Box:
    """A uniformly drawn non-empty box of the grid."""
    r = torch.randint(0, grid[0] + 1, (2,), generator=gen).tolist()
    c = torch.randint(0, grid[1] + 1, (2,), generator=gen).tolist()
    fix = lambda a, b, n: (min(a, b), max(a, b)) if a != b else ((a, a + 1) if a < n else (a - 1, a))  # noqa: E731
    (r0, r1), (c0, c1) = fix(*r, grid[0]), fix(*c, grid[1])
    return r0, c0, r1, c1


def training_streams(ar: ImageAR, codes: torch.Tensor, boxes: list[Box | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """codes int64 [B, 1, rows, cols], a box (infilling) or None (plain generation) per row →
    (stream [B, 1, S] right-padded with the empty id, lengths [B])."""
    spans = [[] if b is None else box_spans(ar.grid, b) for b in boxes]
    return ar.layout.rearrange(codes.flatten(2), spans)


class TrainingLoss(nn.Module):
    """Next-token cross-entropy of streams after caption prefixes (wrap this in DDP).

    forward(stream int64 [B, 1, S], lengths [B], prefix int64 [B, P]) → mean over real tokens."""

    def __init__(self, model: CausalTransformer):
        super().__init__()
        self.model = model

    def forward(self, stream: torch.Tensor, lengths: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        hidden = self.model(codes=stream, prefix=prefix)  # [B, P + S, D]
        logits = self.model.logits(hidden[:, prefix.shape[1] - 1 : -1])[:, :, 0]  # [B, S, V]
        real = torch.arange(stream.shape[-1], device=stream.device)[None] < lengths.to(stream.device)[:, None]
        return F.cross_entropy(logits[real].float(), stream[:, 0][real])


# -- sampling -----------------------------------------------------------------------------------
def captions_prefix(ar: ImageAR, captions: list[str], guided: bool) -> torch.Tensor:
    """Caption ids [B, P], followed by B ``<null>`` rows when ``guided`` → [B or 2B, P]."""
    cond = ar.vocab.batch(captions)
    return torch.cat([cond, ar.vocab.null_batch(len(captions))]) if guided else cond


def _sampler(ar: ImageAR, sampling: SamplingConfig, seed: int) -> Sampler:
    allowed = torch.zeros(1, ar.model.cfg.vocab[0], dtype=torch.bool)
    allowed[:, : ar.codebook_size] = True  # image codes only, never a special id
    return Sampler(sampling, torch.Generator().manual_seed(seed), allowed=lambda step, history: allowed)


def _check_sampling(s: SamplingConfig) -> None:
    if not (math.isfinite(s.temperature) and s.temperature >= 0):
        raise MmarError(f"temperature must be ≥ 0, got {s.temperature}")
    if s.top_k < 0 or not 0 < s.top_p <= 1 or not math.isfinite(s.cfg_scale):
        raise MmarError("top-k must be ≥ 0, top-p in (0, 1] and the CFG scale finite")


@torch.no_grad()
def generate_codes(ar: ImageAR, captions: list[str], sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                   cached: bool = True) -> torch.Tensor:
    """One image per caption ("" = unconditional) → codes int64 [B, 1, rows, cols].
    ``cached=False`` runs the uncached reference (same tokens)."""
    _check_sampling(sampling)
    b = len(captions)
    prefix = captions_prefix(ar, captions, sampling.cfg_scale != 1.0)
    prompt = torch.zeros(prefix.shape[0], 1, 0, dtype=torch.long)
    out = generate(ar.model, prompt, ar.tokens, _sampler(ar, sampling, seed), prefix=prefix, cached=cached)
    return out.tokens[:b].reshape(b, 1, *ar.grid)


@torch.no_grad()
def infill_codes(ar: ImageAR, codes: torch.Tensor, box: Box | torch.Tensor, captions: list[str] | None = None,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0, cached: bool = True) -> torch.Tensor:
    """Regenerate the tokens inside ``box`` (token grid, half-open; or a cell mask bool [rows · cols],
    see :func:`mask_spans`) of codes int64 [B, 1, rows, cols] given the rest and a caption per row
    (None: unconditional) → codes of the same shape, equal outside the regenerated spans."""
    _check_sampling(sampling)
    b = codes.shape[0]
    if codes.shape[1:] != (1, *ar.grid):
        raise MmarError(f"codes must be [B, 1, {ar.grid[0]}, {ar.grid[1]}], got {tuple(codes.shape)}")
    spans = region_spans(ar, box)
    flat = codes.flatten(2)
    stream, _ = ar.layout.rearrange(flat, [spans] * b)  # [B, 1, S]
    head = ar.layout.prompt_steps(ar.tokens, spans)  # U0 m0 … Un
    guided = sampling.cfg_scale != 1.0
    prefix = captions_prefix(ar, captions or [""] * b, guided)
    rows = prefix.shape[0]
    known = stream[..., : head + 1].repeat(rows // b, 1, 1)  # … Un m0
    if cached:
        stepper = CachedStepper(ar.model, rows, prefix.shape[1] + stream.shape[-1])
    else:
        stepper = UncachedStepper(ar.model, rows)
    logits = last_logits(stepper(codes=known, prefix=prefix))
    marks = [torch.full((rows, 1, 1), ar.ids.mask(i), dtype=torch.long) for i in range(len(spans))]
    filled = fill_spans(stepper, logits, [e - s for s, e in spans], marks, _sampler(ar, sampling, seed))
    pieces = [known]
    for i, g in enumerate(filled):
        pieces += [marks[i], g.tokens] if i else [g.tokens]
    full = torch.cat(pieces, dim=-1)[:b]
    restored, _, got = ar.layout.restore(full)
    outside = torch.ones(ar.tokens, dtype=torch.bool)
    for a, e in spans:
        outside[a:e] = False
    if got != [spans] * b or restored.shape != flat.shape or not torch.equal(restored[..., outside], flat[..., outside]):
        raise RuntimeError("infilling changed tokens outside the box")  # cannot happen: the layout copies them
    return restored.view_as(codes)


# -- images in and out --------------------------------------------------------------------------
@dataclass
class LoadedImage:
    """image float [1, 3, side, side] in [0, 1]; size (W, H) of the input; crop (left, top, side) in input pixels."""

    image: torch.Tensor
    size: tuple[int, int]
    crop: tuple[int, int, int]


def load_image(path: Path, side: int = 64) -> LoadedImage:
    """Read any image Pillow can (first frame; alpha composited on white), centre-crop it to a
    square and resize it to ``side``×``side`` (Lanczos). Decompression bombs (more than
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels) and unreadable files are :class:`MmarError`."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise MmarError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)
                rgba = im.convert("RGBA")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MmarError(f"{path}: image too large (over {Image.MAX_IMAGE_PIXELS} pixels; a decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError) as e:
        raise MmarError(f"cannot read image {path}: {str(e).splitlines()[0][:100] if str(e) else type(e).__name__}") from None
    w, h = rgba.size
    if w < 1 or h < 1:
        raise MmarError(f"{path}: empty image")
    x, crop = square_rgb(rgba, side)
    return LoadedImage(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255, (w, h), crop)


def square_rgb(im, side: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A PIL image (any mode; alpha composited on white) → (uint8 [side, side, 3]: centre-cropped to
    a square and resized with Lanczos, the crop (left, top, size) in its pixels)."""
    from PIL import Image

    rgba = im.convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    w, h = rgb.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    small = rgb.crop((left, top, left + s, top + s)).resize((side, side), Image.LANCZOS)
    return np.asarray(small, dtype=np.uint8).copy(), (left, top, s)


def pixel_box_to_grid(box: tuple[int, int, int, int], loaded: LoadedImage, grid: tuple[int, int]) -> Box:
    """A box (x0, y0, x1, y1) in input pixels (half-open) → the token-grid box (r0, c0, r1, c1)
    of every cell it touches after the centre crop and resize of :func:`load_image`."""
    x0, y0, x1, y1 = box
    w, h = loaded.size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise MmarError(f"box {x0},{y0},{x1},{y1} is empty or outside the {w}×{h} image")
    left, top, s = loaded.crop
    cx0, cx1 = max(x0 - left, 0), min(x1 - left, s)
    cy0, cy1 = max(y0 - top, 0), min(y1 - top, s)
    if cx0 >= cx1 or cy0 >= cy1:
        raise MmarError(f"box {x0},{y0},{x1},{y1} lies outside the centre square ({left},{top})–({left + s},{top + s}) that is used")
    rows, cols = grid
    return cy0 * rows // s, cx0 * cols // s, -(-cy1 * rows // s), -(-cx1 * cols // s)


def load_mask(path: Path, loaded: LoadedImage) -> np.ndarray:
    """A mask image the size of the input (white or opaque = regenerate) → bool [H, W]."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.seek(0)
            size = im.size
            rgba = im.convert("RGBA")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise MmarError(f"cannot read mask {path}: {str(e).splitlines()[0][:100] if str(e) else type(e).__name__}") from None
    if size != loaded.size:
        raise MmarError(f"the mask is {size[0]}×{size[1]}, the image {loaded.size[0]}×{loaded.size[1]}: they must match")
    a = np.asarray(rgba, dtype=np.uint8)
    return (a[..., :3].mean(-1) > 127) & (a[..., 3] > 127)


def pixel_mask_to_grid(mask: np.ndarray, loaded: LoadedImage, grid: tuple[int, int]) -> torch.Tensor:
    """A pixel mask bool [H, W] of the input → the token cells (bool [rows · cols], raster order)
    that any masked pixel falls in after the centre crop and resize of :func:`load_image`."""
    w, h = loaded.size
    if mask.shape != (h, w):
        raise MmarError(f"the mask is {mask.shape[1]}×{mask.shape[0]}, the image {w}×{h}: they must match")
    left, top, s = loaded.crop
    square = mask[top : top + s, left : left + s]
    rows, cols = grid
    cells = torch.zeros(rows, cols, dtype=torch.bool)
    ys, xs = np.nonzero(square)
    cells[torch.from_numpy(ys * rows // s), torch.from_numpy(xs * cols // s)] = True
    if not bool(cells.any()):
        raise MmarError("the mask covers nothing inside the centre square that is used")
    return cells.flatten()


def tile(images: torch.Tensor):
    """images float [N, 3, H, W] in [0, 1] → one PIL image: a grid of ceil(√N) columns, row by
    row, white where no image falls (N = 1: the image itself)."""
    from PIL import Image

    n, _, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = torch.ones(3, rows * h, cols * w)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i].clamp(0, 1)
    data = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.frombytes("RGB", (cols * w, rows * h), bytes(data.numpy().tobytes()))


def save_png(images: torch.Tensor, path: Path, force: bool = False) -> Path:
    """Write images [N, 3, H, W] (tiled by :func:`tile`) as a PNG, atomically; refuses an
    existing ``path`` unless ``force``."""
    path = Path(path)
    check_target(path, force)
    img = tile(images)
    return atomic_write(path, lambda p: img.save(p, format="PNG"), tmp_suffix=".png")
