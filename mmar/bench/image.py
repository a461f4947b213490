"""``mmar bench image``: the image tokenizer as an image codec, next to JPEG and WebP at the
same bytes per image, on the emoji test split (never trained on).

Each test image is coded by the tokenizer (its codes cost ceil(cells · log2 V / 8) bytes) and by
JPEG and WebP at the highest quality whose file is no larger; where even the lowest quality is
larger (JPEG's headers alone outweigh 8×8 codes), that smallest file is used and its real size
reported. PSNR (dB, RGB) and SSIM (luma, 8×8 Gaussian-free windows) per image, means per
system and per Unicode group; codebook usage and perplexity over the split. With the σ-VAE
(``image_vae``) its reconstruction is a row too, at the size of its latents in float16: a
comparison of what the two tokenizers keep, not a codec (the latents are not quantised). The
generation benchmark is :mod:`mmar.bench.image_generation`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data.emoji import load_split
from ..tasks.image import load_image_tokenizer
from ..tokenizers.image_cnn import to_uint8
from ..tokenizers.image_vq import code_usage


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """uint8 images [H, W, 3] → PSNR in dB (capped at 100 for identical images)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, win: int = 8) -> float:
    """Mean SSIM of the luma of uint8 images [H, W, 3] over non-overlapping ``win``×``win`` windows."""
    def luma(x):
        return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    y1, y2 = luma(a), luma(b)
    h, w = (y1.shape[0] // win) * win, (y1.shape[1] // win) * win
    p1 = y1[:h, :w].reshape(h // win, win, w // win, win).transpose(0, 2, 1, 3).reshape(-1, win * win)
    p2 = y2[:h, :w].reshape(h // win, win, w // win, win).transpose(0, 2, 1, 3).reshape(-1, win * win)
    m1, m2, v1, v2 = p1.mean(1), p2.mean(1), p1.var(1), p2.var(1)
    cov = ((p1 - m1[:, None]) * (p2 - m2[:, None])).mean(1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(np.mean((2 * m1 * m2 + c1) * (2 * cov + c2) / ((m1**2 + m2**2 + c1) * (v1 + v2 + c2))))


def at_bytes(image: np.ndarray, fmt: str, budget: int) -> tuple[np.ndarray, int]:
    """Encode uint8 [H, W, 3] with Pillow's ``fmt`` at the highest quality (1..95) whose file has
    ≤ ``budget`` bytes (else quality 1) → (decoded image, file bytes)."""
    from PIL import Image

    def encode(q: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt, quality=q)
        return buf.getvalue()

    lo, hi, best = 1, 95, encode(1)
    while lo <= hi:  # file size grows with quality (nearly monotone): binary search
        mid = (lo + hi) // 2
        data = encode(mid)
        if len(data) <= budget:
            best, lo = data, mid + 1
        else:
            hi = mid - 1
    return np.asarray(Image.open(io.BytesIO(best)).convert("RGB")), len(best)


@torch.no_grad()
def run_image_bench(data: Path, tokenizer: Path | None = None, split: str = "test", limit: int | None = None,
                    log: Callable[[str], None] | None = None, vae=None) -> dict:
    """Score the tokenizer, JPEG and WebP (and the σ-VAE ``vae``, a loaded ``image_vae``, when
    given) on ``data``'s ``split`` → results dict (see the module doc)."""
    tok = load_image_tokenizer(tokenizer)
    model = tok.model
    s = load_split(data, split)
    images, entries = s.images[:limit], s.entries[:limit]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    codes = torch.cat([model.encode(x[i : i + 256]).codes for i in range(0, len(x), 256)])
    recon = torch.cat([model.decode(codes[i : i + 256]) for i in range(0, len(codes), 256)])
    recon = to_uint8(recon)
    cells = int(np.prod(codes.shape[1:]))
    budget = math.ceil(cells * math.log2(model.codebook_size) / 8)
    rows: dict[str, list[tuple[float, float, int]]] = {"tokenizer": [], "jpeg": [], "webp": []}
    if vae is not None:
        lat = torch.cat([vae.model.encode(x[i : i + 256]).latents for i in range(0, len(x), 256)])
        vae_recon = to_uint8(torch.cat([vae.model.decode_latents(lat[i : i + 256]) for i in range(0, len(lat), 256)]))
        vae_bytes = int(np.prod(lat.shape[1:])) * 2  # float16 latents: not a codec, a size for comparison
        rows["vae"] = [(psnr(vae_recon[i], img), ssim(vae_recon[i], img), vae_bytes) for i, img in enumerate(images)]
    for i, img in enumerate(images):
        rows["tokenizer"].append((psnr(recon[i], img), ssim(recon[i], img), budget))
        for fmt in ("jpeg", "webp"):
            dec, n = at_bytes(img, fmt.upper(), budget)
            rows[fmt].append((psnr(dec, img), ssim(dec, img), n))
        if log and (i + 1) % 100 == 0:
            log(f"{i + 1}/{len(images)} images")
    usage, perplexity = code_usage(torch.bincount(codes.flatten(), minlength=model.codebook_size))
    groups = sorted({e["group"] for e in entries})
    result = {
        "split": split, "images": len(images), "bytes_per_image_tokens": budget, "grid": list(codes.shape[2:]),
        "tokenizer": {"model": tok.model_id, "weights": tok.weights},
        "vae": None if vae is None else {"model": vae.model_id, "weights": vae.weights, "latent_dim": vae.model.latent_dim},
        "codebook_usage": usage, "perplexity": perplexity,
        "systems": {},
    }
    for name, r in rows.items():
        arr = np.array(r)
        result["systems"][name] = {
            "psnr": float(arr[:, 0].mean()), "ssim": float(arr[:, 1].mean()), "bytes": float(arr[:, 2].mean()),
            "per_group_psnr": {g: float(np.mean([r[j][0] for j, e in enumerate(entries) if e["group"] == g])) for g in groups},
        }
    return result


def format_table(r: dict) -> str:
    lines = [f"{r['images']} {r['split']} images; tokens: {r['grid'][0]}×{r['grid'][1]} codes = {r['bytes_per_image_tokens']} bytes; "
             f"codebook usage {100 * r['codebook_usage']:.1f} %, perplexity {r['perplexity']:.0f}",
             f"{'system':<10}{'bytes':>8}{'PSNR':>8}{'SSIM':>8}"]
    for name, s in r["systems"].items():
        lines.append(f"{name:<10}{s['bytes']:>8.1f}{s['psnr']:>8.2f}{s['ssim']:>8.3f}")
    groups = list(next(iter(r["systems"].values()))["per_group_psnr"])
    if "vae" in r["systems"]:
        lines.append("(vae: σ-VAE latents at float16 size, unquantised: what the continuous tokenizer keeps, not a codec)")
    lines += ["", "PSNR per group: " + "  ".join(r["systems"]), *(
        f"  {g:<22}" + "  ".join(f"{r['systems'][n]['per_group_psnr'][g]:6.2f}" for n in r["systems"]) for g in groups)]
    return "\n".join(lines)
