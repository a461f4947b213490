"""``mmar bench image``: the image tokenizer as an image codec, next to JPEG and WebP at the
same bytes per image, on the emoji test split (never trained on).

Each test image is coded by the tokenizer (its codes cost ceil(cells · log2 V / 8) bytes) and by
JPEG and WebP at the highest quality whose file is no larger; where even the lowest quality is
larger (JPEG's headers alone outweigh 8×8 codes), that smallest file is used and its real size
reported. PSNR (dB, RGB) and SSIM (luma, 8×8 Gaussian-free windows) per image, means per
system and per Unicode group; codebook usage and perplexity over the split.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data.emoji import load_split
from ..generation import SamplingConfig
from ..tasks.image import check_pair, generate_codes, load_image_ar, load_image_tokenizer
from ..text.captions import words
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
                    log: Callable[[str], None] | None = None) -> dict:
    """Score the tokenizer, JPEG and WebP on ``data``'s ``split`` → results dict (see the module doc)."""
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
    lines += ["", "PSNR per group: " + "  ".join(r["systems"]), *(
        f"  {g:<22}" + "  ".join(f"{r['systems'][n]['per_group_psnr'][g]:6.2f}" for n in r["systems"]) for g in groups)]
    return "\n".join(lines)


def _thumbs(images: np.ndarray, side: int = 16) -> np.ndarray:
    """uint8 [N, H, W, 3] → float [N, side·side·3] block means (a cheap, blur-tolerant signature)."""
    n, h, w, _ = images.shape
    f = h // side
    return images.reshape(n, side, f, side, f, 3).mean((2, 4)).reshape(n, -1).astype(np.float64)


@torch.no_grad()
def run_generation_bench(data: Path, checkpoint: Path | None = None, tokenizer: Path | None = None,
                         per_split: int = 64, cfg_scales: tuple[float, ...] = (1.0, 1.5, 3.0), seed: int = 0,
                         sampling: SamplingConfig = SamplingConfig(top_k=50)) -> dict:
    """Caption → image, scored by the nearest render: for ``per_split`` emoji of the train split
    (captions the model saw) and of the test split (never trained on), one sample from the
    emoji's lower-case name is matched against the 16×16 block means of every emoji's render
    (all splits). Reports the share whose nearest render is the same emoji, or one of the same
    group / subgroup, per CFG scale, and the seconds per image with the kv-cache."""
    import time
    from dataclasses import replace

    tok = load_image_tokenizer(tokenizer)
    ar = load_image_ar(checkpoint)
    check_pair(ar, tok)
    splits = {name: load_split(data, name) for name in ("train", "valid", "test")}
    bank_imgs = np.concatenate([s.images for s in splits.values()])
    bank = [e for s in splits.values() for e in s.entries]
    bank_t = _thumbs(bank_imgs)
    groups = [e["group"] for e in bank]
    result: dict = {"per_split": per_split, "sampling": {"top_k": sampling.top_k, "temperature": sampling.temperature},
                    "group_majority_share": max(groups.count(g) for g in set(groups)) / len(groups), "scores": {}}
    for split in ("train", "test"):
        entries = splits[split].entries
        pick = np.random.default_rng(seed).choice(len(entries), min(per_split, len(entries)), replace=False)
        chosen = [entries[i] for i in sorted(pick)]
        for cfg in cfg_scales:
            t0 = time.perf_counter()
            captions = [" ".join(words(e["name"])[: ar.vocab.max_len]) for e in chosen]  # as trained: long names cut
            codes = torch.cat([generate_codes(ar, captions[i : i + 16], replace(sampling, cfg_scale=cfg), seed)
                               for i in range(0, len(chosen), 16)])
            seconds = (time.perf_counter() - t0) / len(chosen)
            imgs = to_uint8(tok.model.decode(codes))
            d = ((_thumbs(imgs)[:, None, :] - bank_t[None]) ** 2).sum(-1)
            nearest = [bank[j] for j in d.argmin(1)]
            result["scores"][f"{split}@cfg{cfg:g}"] = {
                "emoji": float(np.mean([n["seq"] == e["seq"] for n, e in zip(nearest, chosen)])),
                "group": float(np.mean([n["group"] == e["group"] for n, e in zip(nearest, chosen)])),
                "subgroup": float(np.mean([n["subgroup"] == e["subgroup"] for n, e in zip(nearest, chosen)])),
                "seconds_per_image_cached": seconds,
            }
    return result


def format_generation(r: dict) -> str:
    lines = [f"caption → image, {r['per_split']} captions per split, top-k {r['sampling']['top_k']}; nearest render (16×16) is "
             f"the same emoji / subgroup / group (the largest group holds {100 * r['group_majority_share']:.0f} % of all emoji)",
             f"{'captions @ CFG':<16}{'emoji':>8}{'subgroup':>10}{'group':>8}{'s/image':>9}"]
    for key, v in r["scores"].items():
        lines.append(f"{key:<16}{100 * v['emoji']:>7.1f}%{100 * v['subgroup']:>9.1f}%{100 * v['group']:>7.1f}%"
                     f"{v['seconds_per_image_cached']:>9.3f}")
    return "\n".join(lines)
