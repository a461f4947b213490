"""Train a caption-conditioned image model on emoji: image-ar-64 (VQ tokens, cross-entropy) or,
with ``"kind": "image_latent"`` in the config, image-diffusion-64 (σ-VAE latents, a diffusion head).

    python -m mmar.data.emoji --out data/emoji        # once: render + split the emoji set
    python recipes/train_image_ar.py --config recipes/configs/image_ar_small.json \
        --tokenizer-checkpoint runs/image_vq_small/export --out runs/image_ar_small
    python recipes/train_image_ar.py --config recipes/configs/image_diffusion_small.json \
        --tokenizer-checkpoint runs/image_vae_small/export --out runs/image_diffusion_small
    torchrun --nproc_per_node 2 recipes/train_image_ar.py --config ... --out ...   # DDP (gloo on CPU)

Step 1 tokenizes the emoji renders once with the image_vq checkpoint (``--tokenizer-checkpoint``
or ``data.tokenizer``; the original plus ``data.augment_copies`` augmented copies of each training
image, :func:`mmar.data.emoji.augment`) and caches the codes in ``<out>/codes.safetensors`` (keyed
by the tokenizer's weights hash). Step 2 trains :class:`mmar.transformer.CausalTransformer` on
caption prefixes + raster image tokens (:mod:`mmar.tasks.image`): each example's caption is drawn
from its Unicode name, its CLDR name and its aliases (so all of them work at inference), replaced
by ``<null>`` with probability ``train.caption_dropout`` (classifier-free guidance), and a fraction
``train.infill`` of the rows are causal-masking (infilling) rows over a random box. The caption
vocabulary is built from the training captions (``model.caption_len`` words per caption; longer
training captions are truncated). Resumes from ``<out>/state.safetensors``; ``metrics.csv`` logs the
training loss, ``valid.jsonl`` the cross-entropy (nats per token) of plain generation on the
validation split under the Unicode names and unconditioned. The export in ``<out>/export`` is an
``image_ar`` checkpoint (config.json with the vocabulary, the model config and the tokenizer's
identity; model.safetensors): ``mmar image generate --checkpoint <out>/export``.

The latent kind (:mod:`mmar.tasks.image_latent`) differs in three places: the tokenizer is an
``image_vae`` and the cache holds its normalised latents; there are no infilling rows; the loss
is the diffusion head's (``head``: width, depth, objective, repeats of
:class:`mmar.heads.DiffusionConfig`), and ``valid.jsonl`` logs it on the validation split with a
fixed noise draw (``valid_loss``, ``valid_loss_uncond``).

Knobs: ``optim.minutes`` (a wall-clock budget the LR schedule follows), ``train.weight_ema`` (> 0:
export an EMA of the weights), ``train.device`` ("auto": the GPU when there is one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mmar.atomic import atomic_write
from mmar.checkpoint import inference_state, save_pretrained
from mmar.data.emoji import augment, load_split
from mmar.tasks import image_latent
from mmar.tasks.image import TrainingLoss, export_config, from_config, load_image_tokenizer, random_box, training_streams
from mmar.text.captions import CaptionVocab
from mmar.training import (Budget, MetricsLog, WeightEMA, append_jsonl, autocast, load_state, lr_at, optimizer_step,
                           pick_device, save_state, setup_distributed)

CACHE_FORMAT = 2


def captions_of(entry: dict) -> list[str]:
    """An emoji's training captions: its Unicode name, CLDR name and aliases (lower case, unique, in that order)."""
    out: list[str] = []
    for c in [entry.get("name", ""), entry.get("cldr", ""), *entry.get("aliases", [])]:
        c = c.lower().strip()
        if c and c not in out:
            out.append(c)
    return out


@torch.no_grad()
def tokenize(tok, root: Path, copies: int, aug: dict | None, seed: int, out: Path | None, batch: int = 64) -> dict:
    """Codes of the train split (original + ``copies`` augmented copies: [N·(1 + copies), 1, rows, cols],
    image i of copy c at row c·N + i) and of the valid split, cached in ``out`` when given. A
    tokenizer without codes (the VAE) gives its latents instead: float [N·(1 + copies), C, rows, cols]."""
    key = {"format": CACHE_FORMAT, "tokenizer": tok.weights, "copies": copies, "augment": aug, "seed": seed}
    if out is not None and out.is_file():
        meta = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else None
        if meta == key:
            return load_file(str(out))
    model, gen = tok.model, torch.Generator().manual_seed(seed)
    result = {}
    for split in ("train", "valid"):
        if not (root / f"{split}.npz").is_file():
            continue
        data = load_split(root, split)
        x = data.tensors()
        views = [x] + ([augment(x, data.flippable, gen, **(aug or {})) for _ in range(copies)] if split == "train" else [])
        enc = [model.encode(v[i:i + batch]) for v in views for i in range(0, len(v), batch)]
        tokens = [e.latents if e.codes is None else e.codes.short() for e in enc]
        result[split] = torch.cat(tokens).contiguous() if tokens else torch.zeros(0, 1, *model.cfg.grid, dtype=torch.short)
    if out is not None:
        atomic_write(out, lambda p: save_file(result, str(p)))
        atomic_write(out.with_suffix(".json"), lambda p: p.write_text(json.dumps(key)))
    return result


@torch.no_grad()
def valid_ce(loss: TrainingLoss, ar, codes: torch.Tensor, captions: list[str], batch: int = 64) -> float:
    """Mean cross-entropy (nats per token) of plain generation of ``codes`` [M, 1, rows, cols] after ``captions``."""
    was = loss.training
    loss.eval()
    total, n = 0.0, 0
    for i in range(0, len(codes), batch):
        c = codes[i:i + batch].long()
        stream, lengths = training_streams(ar, c, [None] * len(c))
        prefix = ar.vocab.batch(captions[i:i + batch], truncate=True)
        dev = next(loss.parameters()).device
        total += float(loss(stream.to(dev), lengths.to(dev), prefix.to(dev))) * len(c)
        n += len(c)
    loss.train(was)
    return total / max(n, 1)


@torch.no_grad()
def valid_diffusion(net: image_latent.LatentNet, ar, latents: torch.Tensor, captions: list[str], batch: int = 64) -> float:
    """Mean diffusion-head loss on ``latents`` [M, C, rows, cols] after ``captions``, with one fixed
    noise draw (so evaluations compare across steps)."""
    was = net.training
    net.eval()
    gen, dev = torch.Generator().manual_seed(1234), next(net.parameters()).device
    total, n = 0.0, 0
    for i in range(0, len(latents), batch):
        z = latents[i:i + batch].flatten(2).transpose(1, 2)
        prefix = ar.vocab.batch(captions[i:i + batch], truncate=True)
        total += float(net(z.to(dev), prefix.to(dev), gen)) * len(z)
        n += len(z)
    net.train(was)
    return total / max(n, 1)


def train(cfg: dict, out: Path, data: Path | None = None, tokenizer: Path | None = None, stop_after: int | None = None,
          progress: bool = True) -> dict:
    """Run (or resume) the recipe; returns the last logged metrics (with the last validation
    cross-entropy). ``stop_after`` ends the run early at that step (for the resume test)."""
    dist_info = setup_distributed()
    mc, tc, oc, dc = cfg["model"], cfg["train"], cfg["optim"], cfg["data"]
    device = pick_device(tc.get("device", "auto"))
    root = Path(data or dc["root"])
    latent = cfg.get("kind", "image_ar") == "image_latent"
    load_tok = image_latent.load_image_vae if latent else load_image_tokenizer
    tok = load_tok(tokenizer or (Path(dc["tokenizer"]) if dc.get("tokenizer") else None))
    out.mkdir(parents=True, exist_ok=True)
    codes = tokenize(tok, root, dc.get("augment_copies", 0), dc.get("augment"), tc["seed"],
                     out / "codes.safetensors" if dist_info.main else None)
    train_split = load_split(root, "train")
    cands = [captions_of(e) for e in train_split.entries]
    vocab = CaptionVocab.build([c for cs in cands for c in cs], mc["caption_len"])
    if latent:
        config = image_latent.export_config(mc, cfg["head"], vocab, tok.model.latent_dim, tuple(tok.cfg.grid), tok,
                                            cfg.get("name", image_latent.NAME))
    else:
        config = export_config(mc, vocab, tok.model.codebook_size, tuple(tok.cfg.grid), tok, cfg.get("name", "image-ar-64"))
    torch.manual_seed(tc["seed"])
    ar = (image_latent.from_config if latent else from_config)(config)
    model = ar.model.to(device)
    ema = WeightEMA(model, tc["weight_ema"]) if tc.get("weight_ema") else None
    # every (image, caption) pair as ids: pair_ids [N, C, P], n_cands [N]
    width = max(len(c) for c in cands)
    pair_ids = torch.stack([torch.cat([vocab.batch(c, truncate=True), vocab.null_batch(width - len(c))]) for c in cands])
    n_cands = torch.tensor([len(c) for c in cands])
    train_codes, n_images = codes["train"] if latent else codes["train"].long(), len(cands)
    gen = torch.Generator().manual_seed(tc["seed"] * 1000 + dist_info.rank)
    optim = torch.optim.AdamW(model.parameters(), lr=oc["lr"], betas=tuple(oc["betas"]), weight_decay=oc["weight_decay"])
    state_path = out / "state.safetensors"
    step = load_state(state_path, model, optim, gen, ema) if state_path.exists() else 0
    valid = None
    if dist_info.main and "valid" in codes and len(codes["valid"]):
        m = dc.get("valid_max", 512)
        valid = (codes["valid"][:m], [e["name"] for e in load_split(root, "valid").entries][:m])
    objective = model if latent else TrainingLoss(model)
    net = DDP(objective, device_ids=[device] if device.type == "cuda" else None) if dist_info.world > 1 else objective
    total, metrics = oc["steps"], {}
    end = min(total, stop_after) if stop_after else total
    budget = Budget(end, oc.get("minutes"))
    bar = tqdm(total=end, initial=step, disable=not (progress and dist_info.main), desc=cfg.get("kind", "image_ar"), dynamic_ncols=True)
    mlog = MetricsLog(out / "metrics.csv", ["loss", "lr"], tc["log_every"], step == 0, dist_info.main)
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], total)
        for group in optim.param_groups:
            group["lr"] = lr
        b = tc["batch_size"]
        idx = torch.randint(0, len(train_codes), (b,), generator=gen)
        img = idx % n_images
        pick = (torch.rand(b, generator=gen) * n_cands[img]).long()
        prefix = pair_ids[img, pick]
        drop = torch.rand(b, generator=gen) < tc["caption_dropout"]
        prefix[drop] = vocab.null_batch(1)
        if latent:
            with autocast(device):
                loss = net(train_codes[idx].flatten(2).transpose(1, 2).to(device), prefix.to(device), gen)
        else:
            infill = (torch.rand(b, generator=gen) < tc["infill"]).tolist()
            boxes = [random_box(ar.grid, gen) if f else None for f in infill]
            stream, lengths = training_streams(ar, train_codes[idx], boxes)
            with autocast(device):
                loss = net(stream.to(device), lengths.to(device), prefix.to(device))
        optimizer_step(loss, optim, model.parameters(), oc["grad_clip"], ema, model)
        step += 1
        bar.update(1)
        if mlog.due(step):
            metrics = {"step": step, "loss": loss.item(), "lr": lr}
            mlog.write(step, [f"{loss.item():.6f}", f"{lr:.3e}"])
            bar.set_postfix(loss=f"{loss.item():.4f}")
        last = budget.done(step)
        if valid is not None and ((tc["eval_every"] and step % tc["eval_every"] == 0) or last):
            if latent:
                scored = ema.model if ema is not None else model
                ev = {"valid_loss": valid_diffusion(scored, ar, valid[0], valid[1]),
                      "valid_loss_uncond": valid_diffusion(scored, ar, valid[0], [""] * len(valid[1]))}
            else:
                scored = TrainingLoss(ema.model) if ema is not None else objective
                ev = {"valid_ce": valid_ce(scored, ar, valid[0], valid[1]),
                      "valid_ce_uncond": valid_ce(scored, ar, valid[0], [""] * len(valid[1]))}
            metrics.update(ev)
            append_jsonl(out / "valid.jsonl", {"step": step, **ev})
        if dist_info.main and (step % tc["save_every"] == 0 or last):
            save_state(state_path, model, optim, step, gen, {"config": cfg}, ema)
    bar.close()
    mlog.close()
    if dist_info.main and (step >= total or oc.get("minutes")):
        save_pretrained(inference_state((ema.model if ema is not None else model).cpu()), config, out / "export")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", type=Path, help="emoji folder written by python -m mmar.data.emoji (overrides data.root)")
    ap.add_argument("--tokenizer-checkpoint", type=Path, help="image_vq (or, for the latent kind, image_vae) checkpoint directory (overrides data.tokenizer)")
    ap.add_argument("--steps", type=int, help="override optim.steps")
    ap.add_argument("--minutes", type=float, help="override optim.minutes (a wall-clock budget the LR schedule follows)")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.steps:
        cfg["optim"]["steps"] = args.steps
    if args.minutes:
        cfg["optim"]["minutes"] = args.minutes
    print(json.dumps(train(cfg, args.out, args.data, args.tokenizer_checkpoint)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
