"""Train the LMCodec models on the speech codec's tokens: the entropy model over the coarse
levels and the fine-token model.

    python recipes/train_codec_lm.py --config recipes/configs/codec_lm_small.json --out runs/codec_lm

Step 1 tokenizes the training (and validation) audio with the codec checkpoint named in the
config and caches the codes in ``<out>/tokens.safetensors``. Steps 2 and 3 train the two
models (each resumable from ``<out>/<model>.state.safetensors``, metrics in
``<out>/<model>_metrics.csv``). The export in ``<out>/export`` is a ``speech_lm`` checkpoint
holding, per model, the weights with the best held-out loss (64 crops of the validation
tokens, checked every ``log_every`` steps), and ``held_out_metrics.json``: bits per level on
the whole validation stream. ``--only entropy|fine`` trains one model and skips the export.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mmar.atomic import write_json
from mmar.checkpoint import save_pretrained
from mmar.data.crops import audio_files, load_mono
from mmar.patterns import SpecialIds
from mmar.tasks.codec import load_codec
from mmar.tasks.codec_lm import build_models, entropy_batch, expected_vectors
from mmar.training import (Budget, MetricsLog, autocast, load_state, lr_at, optimizer_step, pick_device, save_state,
                           save_weights)


@torch.no_grad()
def tokenize(codec_dir: Path, dirs: list[str], block_seconds: float = 30.0, device: torch.device | None = None) -> torch.Tensor:
    """Encode every file under ``dirs`` with all levels → codes int16 [K, N] (files concatenated)."""
    codec = load_codec(codec_dir).model.to(device or "cpu")
    parts = []
    files = [f for d in dirs for f in audio_files(Path(d))]
    for f in tqdm(files, desc="tokenize", leave=False):
        x = torch.from_numpy(load_mono(f, codec.sample_rate))
        if x.numel() < codec.cfg.hop or x.abs().max() < 1e-3:  # empty or silent files
            continue
        for i in range(0, len(x), int(block_seconds * codec.sample_rate)):
            parts.append(codec.encode(x[None, i : i + int(block_seconds * codec.sample_rate)].to(device or "cpu")).codes[0].short().cpu())
    return torch.cat(parts, dim=1)


def crops(tokens: torch.Tensor, batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    """Random crops [B, K, length] (int64) of a token stream [K, N]."""
    starts = torch.randint(0, tokens.shape[1] - length, (batch,), generator=g)
    return torch.stack([tokens[:, s : s + length] for s in starts.tolist()]).long()


def loss_fn(kind: str, model, codes: torch.Tensor, coarse: int, empty: int) -> torch.Tensor:
    """Mean cross-entropy in nats per coded symbol. codes [B, K, T] (all levels)."""
    if kind == "entropy":
        inp, tgt = entropy_batch(codes[:, :coarse], empty)
        logits = model.logits(model(codes=inp))  # [B, S, L, V]
        return F.cross_entropy(logits.flatten(0, 2), tgt.transpose(1, 2).flatten(), ignore_index=empty)
    logits = model.logits(model(codes=codes[:, :coarse]))  # [B, T, F, V]: fine levels from the coarse ones
    return F.cross_entropy(logits.flatten(0, 2), codes[:, coarse:].transpose(1, 2).flatten())


def train_one(kind: str, model, cfg: dict, tokens: torch.Tensor, valid: torch.Tensor | None, out: Path,
              device: torch.device) -> dict:
    """Train (or resume) one model; ``optim.<kind>.minutes`` sets a wall-clock budget instead of the step count."""
    oc, mc = cfg["optim"][kind], cfg["model"]
    model.to(device)
    coarse, empty, length = mc["coarse"], SpecialIds(mc["codebook_size"]).empty, mc["window"]
    g = torch.Generator().manual_seed(cfg["seed"])
    optim = torch.optim.AdamW(model.parameters(), lr=oc["lr"], betas=(0.9, 0.95), weight_decay=0.01)
    state, best_path = out / f"{kind}.state.safetensors", out / f"{kind}.best.safetensors"
    step = load_state(state, model, optim, g) if state.exists() else 0
    best = json.loads(state.with_suffix(".json").read_text())["meta"].get("best_valid", math.inf) if step else math.inf
    vset = crops(valid, 64, length, torch.Generator().manual_seed(1)).to(device) if valid is not None else None
    mlog = MetricsLog(out / f"{kind}_metrics.csv", ["bits_per_symbol", "valid_bits_per_symbol", "lr"], cfg["log_every"], step == 0)
    result, budget = {}, Budget(oc["steps"], oc.get("minutes"))
    bar = tqdm(initial=step, total=oc["steps"], desc=kind, dynamic_ncols=True)
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], oc["steps"])
        for group in optim.param_groups:
            group["lr"] = lr
        with autocast(device):
            loss = loss_fn(kind, model, crops(tokens, oc["batch_size"], length, g).to(device), coarse, empty)
        optimizer_step(loss, optim, model.parameters(), 1.0)
        step = done = step + 1
        bar.update(1)
        last = budget.done(done)
        if mlog.due(done, last):
            vb = ""
            if vset is not None:
                model.eval()
                with torch.no_grad(), autocast(device):
                    vb = loss_fn(kind, model, vset, coarse, empty).item() / math.log(2)
                model.train()
            if vb != "" and vb < best:  # keep the weights with the best held-out loss for the export
                best = vb
                save_weights(best_path, model)
            result = {"step": done, "bits_per_symbol": loss.item() / math.log(2), "valid_bits_per_symbol": vb}
            mlog.write(done, [f"{result['bits_per_symbol']:.4f}", f"{vb:.4f}" if vb != "" else "", f"{lr:.2e}"])
        if done % cfg["save_every"] == 0 or last:
            save_state(state, model, optim, done, g, {"kind": kind, "best_valid": best})
    bar.close()
    mlog.close()
    model.cpu()
    return result


@torch.no_grad()
def held_out_metrics(entropy, fine, codes: torch.Tensor, mc: dict, books: list[torch.Tensor], batch: int = 32) -> dict:
    """Both models on a held-out stream codes [K, N], cut into windows of ``mc["window"]`` frames:
    bits per symbol per level, and the share of the fine residual's squared error (in the codec's
    latent space) left after adding the fine model's expected codebook vectors (1.0 = no help)."""
    coarse, levels, empty, w = mc["coarse"], mc["levels"], SpecialIds(mc["codebook_size"]).empty, mc["window"]
    n = codes.shape[1] // w
    windows = codes[:, : n * w].long().view(-1, n, w).transpose(0, 1)  # [n, K, w]
    ent_bits, fine_bits, err, energy = torch.zeros(coarse), torch.zeros(levels - coarse), 0.0, 0.0
    fine_books = torch.stack(books[coarse:levels])  # [F, V, D]
    for i in range(0, n, batch):
        c = windows[i : i + batch]
        inp, tgt = entropy_batch(c[:, :coarse], empty)
        logits = entropy.logits(entropy(codes=inp)).transpose(1, 2)[..., : mc["codebook_size"]]  # [B, L, S, V] as coded
        nll = F.cross_entropy(logits.flatten(0, 2), tgt.flatten(), ignore_index=empty, reduction="none")
        ent_bits += nll.view(tgt.shape).sum((0, 2))
        logits = fine.logits(fine(codes=c[:, :coarse]))[..., : mc["codebook_size"]]  # [B, T, F, V]
        target = c[:, coarse:levels].transpose(1, 2)  # [B, T, F]
        fine_bits += F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none").view(target.shape).sum((0, 1))
        residual = fine_books[torch.arange(levels - coarse), target].sum(2)  # [B, T, D]
        estimate = expected_vectors(logits, fine_books)
        err += (residual - estimate).pow(2).sum().item()
        energy += residual.pow(2).sum().item()
    ln2 = math.log(2)
    return {"held_out_frames": n * w,
            "entropy_bits_per_level": [round(b, 3) for b in (ent_bits / (n * w) / ln2).tolist()],
            "entropy_bits_per_symbol": round(ent_bits.sum().item() / (n * w * coarse) / ln2, 3),
            "fine_bits_per_level": [round(b, 3) for b in (fine_bits / (n * w) / ln2).tolist()],
            "fine_residual_error_left": round(err / max(energy, 1e-12), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--codec", type=Path, help="codec checkpoint (overrides the config)")
    ap.add_argument("--data", nargs="+", help="training audio folders (override the config)")
    ap.add_argument("--valid", nargs="+", help="validation audio folders (override the config)")
    ap.add_argument("--only", choices=["entropy", "fine"], help="train this model only (no export)")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    codec_dir = args.codec or Path(cfg["codec"])
    device = pick_device(cfg.get("device", "auto"))
    args.out.mkdir(parents=True, exist_ok=True)
    tok_path = args.out / "tokens.safetensors"
    valid_dirs = args.valid or cfg["data"].get("valid")
    if not tok_path.exists():
        tensors = {"train": tokenize(codec_dir, args.data or cfg["data"]["train"], device=device)}
        if valid_dirs:
            tensors["valid"] = tokenize(codec_dir, valid_dirs, device=device)
        save_file(tensors, str(tok_path))
    tokens = load_file(str(tok_path))
    torch.manual_seed(cfg["seed"])
    entropy, fine = build_models(cfg["model"])
    results = {kind: train_one(kind, m, cfg, tokens["train"], tokens.get("valid"), args.out, device)
               for kind, m in (("entropy", entropy), ("fine", fine)) if args.only in (None, kind)}
    if args.only:
        print(json.dumps(results))
        return 0
    for kind, m in (("entropy", entropy), ("fine", fine)):  # export the best held-out weights, if tracked
        if (args.out / f"{kind}.best.safetensors").exists():
            m.load_state_dict(load_file(str(args.out / f"{kind}.best.safetensors")))
    codec = load_codec(codec_dir)
    state = {f"entropy.{k}": v for k, v in entropy.state_dict().items()}
    state |= {f"fine.{k}": v for k, v in fine.state_dict().items()}
    save_pretrained(state, {"kind": "speech_lm", "name": cfg["name"], **cfg["model"], "codec_weights": codec.weights}, args.out / "export")
    if "valid" in tokens:
        results["held_out"] = held_out_metrics(entropy.eval(), fine.eval(), tokens["valid"], cfg["model"], codec.model.codebooks())
        write_json(results["held_out"], args.out / "export" / "held_out_metrics.json")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
