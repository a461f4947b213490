"""``mmar bench image --generation N``: caption → image, scored by the project's own emoji
classifier (:mod:`mmar.eval.image_classifier`, trained on the training split only), for each
image path in one table: VQ tokens + token model (``image_vq``) and σ-VAE latents + diffusion
head (``image_vae``).

For N emoji of the train split (captions the models saw) and N of the test split (never trained
on), one image per emoji's lower-case Unicode name and CFG scale is scored by:

- **caption accuracy**: the classifier's top-1 / top-5 group and subgroup against the emoji's own;
  the classifier's accuracy on the real renders of the same emoji is the ceiling;
- **FD**: the Fréchet distance, in the classifier's feature space, between the generated images
  and the renders of N *other* emoji of the split; the floor is the FD between the real renders
  of the captioned emoji and those same others (two halves of the split's real images): what a
  perfect generator would score;
- **diversity**: mean pairwise feature distance between 4 seeds of one caption (16 captions),
  next to that between renders of different emoji;
- **speed**: seconds per image, one image at a time, with the kv-cache and recomputing the whole
  prefix at every step (same samples), and their ratio;
- **infill** (VQ path): tokens changed outside the box (must be 0) and PSNR inside / outside;
- with ``png``: a grid per path (``<stem>_<path>.png``), one row per caption (4 trained emoji, then
  4 unseen), 6 seeds at CFG 3; the captions are listed in the JSON.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data.emoji import load_split
from ..eval.image_classifier import LoadedClassifier, frechet_distance, mean_pairwise_distance, topk_accuracy
from ..generation import SamplingConfig
from ..text.captions import words

Sample = Callable[[list[str], float, int, bool], torch.Tensor]
"""(captions, CFG scale, seed, cached) → images float [B, 3, 64, 64] in [0, 1]."""


@dataclass
class ImagePath:
    name: str
    model: str  # model ids, for the table
    sample: Sample
    infill: Callable[[torch.Tensor, int], dict] | None = None  # (images, seed) → infill scores


def _cut(vocab, captions: list[str]) -> list[str]:
    """Captions cut to the model's caption length, as in training (long names are truncated)."""
    return [" ".join(words(c)[: vocab.max_len]) for c in captions]


def vq_path(checkpoint: Path | None = None, tokenizer: Path | None = None,
            sampling: SamplingConfig = SamplingConfig(top_k=50)) -> ImagePath:
    """The token path: ``image-ar-64`` over ``image-vq-64`` codes."""
    from ..tasks.image import check_pair, generate_codes, load_image_ar, load_image_tokenizer

    tok, ar = load_image_tokenizer(tokenizer), load_image_ar(checkpoint)
    check_pair(ar, tok)

    def sample(captions, cfg, seed, cached):
        return tok.model.decode(generate_codes(ar, _cut(ar.vocab, captions), replace(sampling, cfg_scale=cfg), seed, cached))

    def infill(images, seed):
        return _infill_scores(ar, tok, images, seed)

    return ImagePath("image_vq", f"{ar.model_id} + {tok.model_id}", sample, infill)


def vae_path(checkpoint: Path | None = None, tokenizer: Path | None = None, steps: int = 16,
             temperature: float = 1.0) -> ImagePath:
    """The continuous path: ``image-diffusion-64`` over ``image-vae-64`` latents."""
    from ..tasks.image_latent import check_vae_pair, generate_latents, load_image_latent, load_image_vae

    tok, ar = load_image_vae(tokenizer), load_image_latent(checkpoint)
    check_vae_pair(ar, tok)

    def sample(captions, cfg, seed, cached):
        return tok.model.decode_latents(generate_latents(ar, _cut(ar.vocab, captions), steps, temperature, cfg, seed, cached))

    return ImagePath("image_vae", f"{ar.model_id} + {tok.model_id}", sample)


@torch.no_grad()
def _infill_scores(ar, tok, images: torch.Tensor, seed: int) -> dict:
    """Regenerate a random box of each image's tokens (unconditional, CFG 1.5) → tokens changed
    outside the boxes, and PSNR inside / outside the boxes against the tokenizer's reconstruction."""
    from ..tasks.image import box_mask, infill_codes, random_box

    gen = torch.Generator().manual_seed(seed)
    changed, inside, outside = 0, [], []
    f = tok.cfg.factor
    for i in range(len(images)):
        codes = tok.model.encode(images[i : i + 1]).codes
        box = random_box(ar.grid, gen)
        filled = infill_codes(ar, codes, box, None, SamplingConfig(top_k=50, cfg_scale=1.5), seed + i)
        cells = box_mask(ar.grid, box).view(ar.grid)
        changed += int((filled[0, 0] != codes[0, 0])[~cells].sum())
        pix = cells.repeat_interleave(f, 0).repeat_interleave(f, 1)
        a, b = tok.model.decode(filled)[0], tok.model.decode(codes)[0]
        err = (a - b).pow(2).mean(0)
        inside.append(10 * math.log10(1 / max(float(err[pix].mean()), 1e-10)))
        outside.append(10 * math.log10(1 / max(float(err[~pix].mean()), 1e-10)) if bool((~pix).any()) else 100.0)
    return {"images": len(images), "tokens_changed_outside": changed,
            "psnr_inside_vs_reconstruction": float(np.mean(inside)), "psnr_outside_vs_reconstruction": float(np.mean(outside))}


def _classify(clf: LoadedClassifier, images: torch.Tensor, entries: list[dict]) -> dict:
    feats, gl, sl = clf.run(images)
    g = torch.tensor([clf.groups.index(e["group"]) for e in entries])
    s = torch.tensor([clf.subgroups.index(e["subgroup"]) if e["subgroup"] in clf.subgroups else -1 for e in entries])
    return {"group_top1": topk_accuracy(gl, g, 1), "group_top5": topk_accuracy(gl, g, 5),
            "subgroup_top1": topk_accuracy(sl, s, 1), "subgroup_top5": topk_accuracy(sl, s, 5), "features": feats}


def _batched(sample: Sample, captions: list[str], cfg: float, seed: int, batch: int = 16) -> torch.Tensor:
    return torch.cat([sample(captions[i : i + batch], cfg, seed, True) for i in range(0, len(captions), batch)])


@torch.no_grad()
def run_generation_bench(data: Path, paths: list[ImagePath], classifier: LoadedClassifier, per_split: int = 64,
                         cfg_scales: tuple[float, ...] = (1.0, 1.5, 3.0), seed: int = 0, diversity_captions: int = 16,
                         seeds: int = 4, timing_images: int = 3, infill_images: int = 32,
                         log: Callable[[str], None] | None = None, png: Path | None = None, held_out: str = "test") -> dict:
    """Score every path on ``data``'s train split and its ``held_out`` split (see the module doc;
    "valid" for decisions such as ablations, "test" for what is reported) → results dict."""
    if held_out not in ("valid", "test"):
        raise ValueError(f"held_out must be 'valid' or 'test', got {held_out!r}")
    log = log or (lambda s: None)
    rng = np.random.default_rng(seed)
    result: dict = {"per_split": per_split, "cfg_scales": list(cfg_scales), "seed": seed, "held_out": held_out, "real": {},
                    "paths": {}}
    chosen: dict[str, tuple[list[dict], torch.Tensor]] = {}  # split → (captioned emoji, features of N other renders)
    for split in ("train", held_out):
        s = load_split(data, split)
        order = rng.permutation(len(s.entries))
        n = min(per_split, len(order) // 2)
        pick, other = sorted(order[:n]), sorted(order[n : 2 * n])
        real = s.tensors()
        if split == held_out:
            test_images = real[:infill_images]  # the infill check's inputs
        entries = [s.entries[i] for i in pick]
        mine = _classify(classifier, real[pick], entries)
        others = classifier.run(real[other])[0]
        feats = mine.pop("features")
        chosen[split] = (entries, others)
        result["real"][split] = {**mine, "fd_floor": frechet_distance(feats, others),
                                 "diversity_between_emoji": mean_pairwise_distance(feats)}
    for path in paths:
        log(f"{path.name}: sampling")
        rows: dict = {}
        for split, (entries, others) in chosen.items():
            captions = [" ".join(words(e["name"])) for e in entries]
            for cfg in cfg_scales:
                t0 = time.perf_counter()
                imgs = _batched(path.sample, captions, cfg, seed)
                sec = (time.perf_counter() - t0) / len(imgs)
                scores = _classify(classifier, imgs, entries)
                rows[f"{split}@cfg{cfg:g}"] = {**{k: v for k, v in scores.items() if k != "features"},
                                               "fd": frechet_distance(scores["features"], others),
                                               "seconds_per_image_batched": sec}
                log(f"  {split} cfg {cfg:g}: group {scores['group_top1']:.2f}, subgroup {scores['subgroup_top1']:.2f}")
        entries = chosen[held_out][0][:diversity_captions]
        spread = []
        for e in entries:
            imgs = torch.cat([path.sample([" ".join(words(e["name"]))], 1.5, seed + k, True) for k in range(seeds)])
            spread.append(mean_pairwise_distance(classifier.run(imgs)[0]))
        timing = {}
        for cached in (True, False):
            t0 = time.perf_counter()
            for k in range(timing_images):
                path.sample([" ".join(words(chosen[held_out][0][k]["name"]))], 1.5, seed, cached)
            timing["cached" if cached else "uncached"] = (time.perf_counter() - t0) / timing_images
        timing["ratio_uncached_over_cached"] = timing["uncached"] / timing["cached"]
        out = {"model": path.model, "scores": rows, "speed_one_image_cfg1.5": timing,
               "diversity_same_caption": float(np.mean(spread)), "diversity_captions": len(entries), "diversity_seeds": seeds}
        if path.infill is not None and infill_images:
            out["infill"] = path.infill(test_images, seed)
        if png is not None:
            rows = [e for split in chosen for e in chosen[split][0][:4]]
            out["png"] = str(_grid_png(path, [" ".join(words(e["name"])) for e in rows], png, seed))
            out["png_captions"] = [("" if e["split"] == "train" else f"[{held_out}] ") + e["name"] for e in rows]
        result["paths"][path.name] = out
    return result


def _grid_png(path: ImagePath, captions: list[str], png: Path, seed: int, seeds: int = 6, cfg: float = 3.0) -> Path:
    """One row per caption, ``seeds`` samples each, at CFG ``cfg`` → ``<png stem>_<path name>.png``."""
    from ..tasks.image import save_png

    rows = [torch.cat([path.sample([c], cfg, seed + k, True) for k in range(seeds)]) for c in captions]
    images = torch.stack(rows)  # [R, S, 3, H, W]
    r, k, _, h, w = images.shape
    canvas = torch.ones(1, 3, r * h, k * w)
    for i in range(r):
        for j in range(k):
            canvas[0, :, i * h : (i + 1) * h, j * w : (j + 1) * w] = images[i, j]
    target = Path(png).with_name(f"{Path(png).stem}_{path.name}.png")
    return save_png(canvas, target, force=True)


def format_generation(r: dict) -> str:
    """The results as text tables."""
    lines = [f"caption → image: {r['per_split']} emoji per split, one sample per caption (seed {r['seed']}); "
             "scored by the project's emoji classifier (trained on the train split)",
             f"{'path':<10}{'captions @ CFG':<15}{'group@1':>8}{'group@5':>8}{'subgr@1':>8}{'subgr@5':>8}{'FD':>8}{'s/img':>8}"]
    for split, v in r["real"].items():
        lines.append(f"{'real':<10}{split:<15}{100 * v['group_top1']:>7.1f}%{100 * v['group_top5']:>7.1f}%"
                     f"{100 * v['subgroup_top1']:>7.1f}%{100 * v['subgroup_top5']:>7.1f}%{v['fd_floor']:>8.1f}{'':>8}")
    for name, p in r["paths"].items():
        for key, v in p["scores"].items():
            lines.append(f"{name:<10}{key:<15}{100 * v['group_top1']:>7.1f}%{100 * v['group_top5']:>7.1f}%"
                         f"{100 * v['subgroup_top1']:>7.1f}%{100 * v['subgroup_top5']:>7.1f}%{v['fd']:>8.1f}"
                         f"{v['seconds_per_image_batched']:>8.3f}")
    lines += ["(real rows: the classifier on the captioned emoji's renders, the ceiling; FD is to the renders of "
              "as many other emoji, and the real rows' FD is the floor)", "",
              f"{'path':<10}{'diversity':>10}{'(between emoji)':>16}{'s/img cached':>14}{'uncached':>10}{'ratio':>7}"]
    for name, p in r["paths"].items():
        t = p["speed_one_image_cfg1.5"]
        lines.append(f"{name:<10}{p['diversity_same_caption']:>10.2f}{r['real'][r.get('held_out', 'test')]['diversity_between_emoji']:>16.2f}"
                     f"{t['cached']:>14.3f}{t['uncached']:>10.3f}{t['ratio_uncached_over_cached']:>6.1f}×")
        if "infill" in p:
            f = p["infill"]
            lines.append(f"{'':<10}infill ({f['images']} test images, a random box each): {f['tokens_changed_outside']} tokens "
                         f"changed outside; PSNR vs reconstruction inside {f['psnr_inside_vs_reconstruction']:.1f} dB, "
                         f"outside {f['psnr_outside_vs_reconstruction']:.1f} dB")
    return "\n".join(lines)
