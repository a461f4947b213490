"""Train the mmar speech codec (causal STFT encoder, RVQ, iSTFT decoder).

    python recipes/train_codec.py --config recipes/configs/codec_small.json --out runs/codec_small
    torchrun --nproc_per_node 2 recipes/train_codec.py --config ... --out ...   # DDP (gloo on CPU)

Resumes from ``<out>/state.safetensors`` when it exists. Under DDP the codebooks' EMA buffers
follow rank 0 (DDP broadcasts buffers before each forward); gradients are averaged as usual. Writes ``metrics.csv`` (step,
losses, lr, seconds per step) and, at the end, an inference checkpoint in ``<out>/export``.

Config knobs beyond the model: ``train.device`` ("auto": the GPU when there is one),
``train.weight_ema`` (> 0: export an exponential moving average of the weights),
``train.freeze`` (e.g. ``["encoder", "quantizer"]``: train the decoder alone, so the codes and
every model trained on them stay valid), ``optim.minutes`` (a wall-clock budget that the LR
schedule follows, for fixed-time GPU runs), ``data.augment`` (the probability that a crop is
augmented on the fly, :mod:`mmar.data.augment`) and ``data.augment_workers`` (processes that
augment a batch in parallel; default: the cores beyond 4, at most 15, so that a GPU is not kept
waiting on numpy), ``train.adversarial`` (a multi-scale STFT discriminator,
:mod:`mmar.tokenizers.discriminator`: ``weight`` of the hinge loss, ``feature_weight`` of feature
matching, ``start`` step, ``lr``, ``betas``, ``model`` sizes; its state resumes from
``<out>/disc.safetensors``); ``--init DIR`` starts from a checkpoint's weights.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from safetensors.torch import load_file
from tqdm import tqdm

from mmar.checkpoint import inference_state, load_pretrained, save_pretrained, substate
from mmar.data.crops import CropDataset
from mmar.tokenizers.discriminator import (DiscriminatorConfig, MultiScaleSTFTDiscriminator, discriminator_loss,
                                           generator_losses)
from mmar.tokenizers.spectral import MultiResolutionLoss
from mmar.tokenizers.speech_codec import CodecConfig, SpeechCodec
from mmar.training import (Budget, MetricsLog, WeightEMA, append_jsonl, load_state, lr_at, optimizer_step, pick_device,
                           save_state, setup_distributed)


def pick_levels(k: int, focus: list[int], g: torch.Generator) -> int:
    """Quantizer dropout: half the batches use a level count from ``focus`` (the shipped
    bitrates), the rest a uniform count in 1..k."""
    if focus and torch.rand((), generator=g) < 0.5:
        return focus[int(torch.randint(0, len(focus), (), generator=g))]
    return int(torch.randint(1, k + 1, (), generator=g))


def augmented(audio: torch.Tensor, p: float, gen: torch.Generator, sample_rate: int,
              pool: Executor | None = None) -> torch.Tensor:
    """Each crop of audio [B, N] is, with probability ``p``, replaced by one random
    :func:`mmar.data.augment.augment` of it (pitch/formant shift, band limit, room, noise, gain),
    seeded from ``gen`` so that a resumed run draws the same augmentations. ``pool`` spreads the
    crops over processes; the result is the same without it."""
    from mmar.data.augment import augment_seeded

    seeds = torch.randint(0, 2**31 - 1, (audio.shape[0],), generator=gen).tolist()
    picks = torch.rand(audio.shape[0], generator=gen).tolist()
    x = audio.numpy().copy()
    todo = [i for i, u in enumerate(picks) if u < p]
    work = ([x[i] for i in todo], [seeds[i] for i in todo], [sample_rate] * len(todo))
    done = pool.map(augment_seeded, *work, chunksize=max(1, len(todo) // 16)) if pool else map(augment_seeded, *work)
    for i, y in zip(todo, done):
        x[i] = y
    return torch.from_numpy(x)


def augment_pool(workers: int | None, world: int = 1) -> Executor | None:
    """Processes for :func:`augmented`: ``workers`` (0: none), or by default this rank's share of the
    cores beyond 4, at most 15 (none on a small machine, where the training step needs every core)."""
    if workers is None:
        workers = min(15, max(0, len(os.sched_getaffinity(0)) // world - 4))
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 0 else None


class Adversary:
    """The discriminator of ``train.adversarial`` with its optimiser. :meth:`losses` trains it one
    step on a batch, then returns the generator's weighted adversarial + feature-matching loss."""

    def __init__(self, ac: dict, device: torch.device, world: int):
        sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in ac.get("model", {}).items()}
        self.disc = MultiScaleSTFTDiscriminator(DiscriminatorConfig(**sizes)).to(device)
        self.net = DDP(self.disc, device_ids=[device] if device.type == "cuda" else None) if world > 1 else self.disc
        self.params = list(self.disc.parameters())
        self.optim = torch.optim.AdamW(self.params, lr=ac.get("lr", 2e-4), betas=tuple(ac.get("betas", (0.5, 0.9))))
        self.weight, self.feature_weight, self.start = ac.get("weight", 1.0), ac.get("feature_weight", 1.0), ac.get("start", 0)

    def losses(self, audio: torch.Tensor, rec: torch.Tensor, grad_clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """audio, rec [B, N] → (weighted generator loss, its parts and the discriminator's loss as
        detached scalars: read them only when logging, so that a GPU step never waits on them)."""
        d = discriminator_loss(self.net(audio), self.net(rec.detach()))
        optimizer_step(d, self.optim, self.params, grad_clip)
        self.disc.requires_grad_(False)  # the generator's step leaves the discriminator alone
        with torch.no_grad():
            real = self.disc(audio)
        adv, fm = generator_losses(real, self.disc(rec))
        self.disc.requires_grad_(True)
        return self.weight * adv + self.feature_weight * fm, {"adv": adv.detach(), "fm": fm.detach(), "disc": d.detach()}


@torch.no_grad()
def evaluate(codec: SpeechCodec, loss_fn, clips: torch.Tensor, levels: list[int]) -> dict[str, float]:
    """Mean multi-resolution loss on fixed validation crops [M, N] at each level count."""
    codec.eval()
    out = {}
    for n in levels:
        rec, _ = codec(clips, levels=n)
        out[f"valid_loss@{n}"] = float(loss_fn(rec, clips))
    codec.train()
    return out


def train(cfg: dict, out: Path, data: str | None = None, stop_after: int | None = None, progress: bool = True,
          init: Path | None = None) -> dict:
    """Run (or resume) the recipe; returns the last logged metrics. ``stop_after`` ends the run
    early at that step (used to test that resuming equals an uninterrupted run); ``init`` is a
    checkpoint directory whose weights a new run starts from."""
    dist_info = setup_distributed()
    tc, oc, dc = cfg["train"], cfg["optim"], cfg["data"]
    device = pick_device(tc.get("device", "auto"))
    torch.manual_seed(tc["seed"])
    codec = SpeechCodec(CodecConfig(**cfg["model"]))
    mc = codec.cfg
    frozen = set(tc.get("freeze", []))
    tokens = ""  # set when the codes stay those of the init checkpoint (encoder and quantizer frozen)
    if init is not None:
        state, init_config, init_weights = load_pretrained(init)
        if {"encoder", "quantizer"} <= frozen:
            tokens = init_config.get("tokens") or init_weights
        codec.load_state_dict(state, strict=False)  # inference checkpoints hold no EMA statistics
        for cb in codec.quantizer.codebooks:  # their codebooks are initialised: no k-means
            cb.ema_sum.copy_(cb.codebook)
            cb.initialized.fill_(True)
    for name in frozen:
        getattr(codec, name).requires_grad_(False)
    codec.to(device)
    ema = WeightEMA(codec, tc["weight_ema"]) if tc.get("weight_ema") else None
    crop = int(dc["crop_seconds"] * mc.sample_rate) // mc.hop * mc.hop
    if crop // mc.hop < 1.5 * mc.receptive_field:
        raise ValueError(f"crops of {crop // mc.hop} frames are too short for a receptive field of "
                         f"{mc.receptive_field} frames: use at least {1.5 * mc.receptive_field / mc.frame_rate:.2f} s")
    dataset = CropDataset([Path(p) for p in (data or dc["train"])], mc.sample_rate, crop, gain_db=tuple(dc["gain_db"]))
    gen = torch.Generator().manual_seed(tc["seed"] * 1000 + dist_info.rank)
    loss_fn = MultiResolutionLoss(mc.sample_rate).to(device)
    params = [p for p in codec.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=oc["lr"], betas=tuple(oc["betas"]), weight_decay=oc["weight_decay"])
    out.mkdir(parents=True, exist_ok=True)
    state_path, disc_path = out / "state.safetensors", out / "disc.safetensors"
    adversary = Adversary(tc["adversarial"], device, dist_info.world) if tc.get("adversarial") else None
    step = 0
    if state_path.exists():
        step = load_state(state_path, codec, optim, gen, ema)
        if adversary is not None and disc_path.exists():
            load_state(disc_path, adversary.disc, adversary.optim, gen)  # saved with the same generator state
    elif not bool(codec.quantizer.codebooks[0].initialized):
        with torch.no_grad():
            audio = torch.cat([dataset.batch(tc["batch_size"], gen) for _ in range(tc["kmeans_batches"])]).to(device)
            codec.quantizer.init_kmeans(codec.analyse(audio).cpu(), gen)
    valid = None
    if dc.get("valid") and tc["eval_every"]:
        vset = CropDataset([Path(p) for p in dc["valid"]], mc.sample_rate, crop * 2, gain_db=(-6, -6))
        valid = vset.batch(32, torch.Generator().manual_seed(123)).to(device)
    model = (DDP(codec, device_ids=[device] if device.type == "cuda" else None) if dist_info.world > 1 else codec)
    total, metrics = oc["steps"], {}
    end = min(total, stop_after) if stop_after else total
    budget = Budget(end, oc.get("minutes"))
    pool = augment_pool(dc.get("augment_workers"), dist_info.world) if dc.get("augment") else None
    bar = tqdm(total=end, initial=step, disable=not (progress and dist_info.main), desc="codec", dynamic_ncols=True)
    adv_cols = ["adv", "fm", "disc"] if adversary is not None else []
    mlog = MetricsLog(out / "metrics.csv", ["loss", "recon", "commit", "levels", "lr", *adv_cols], tc["log_every"], step == 0,
                      dist_info.main)
    while not budget.done(step):
        lr = lr_at(budget.schedule_step(step), oc["lr"], oc["warmup"], total)
        for group in optim.param_groups:
            group["lr"] = lr
        audio = dataset.batch(tc["batch_size"], gen)
        if dc.get("augment"):
            audio = augmented(audio, dc["augment"], gen, mc.sample_rate, pool)
        audio = audio.to(device)
        levels = pick_levels(mc.levels, tc["level_focus"], gen)
        rec, q = model(audio, levels=levels, update="quantizer" not in frozen, generator=gen)
        recon = loss_fn(rec, audio)
        loss = recon + tc["commit_weight"] * q.commit
        parts = dict.fromkeys(adv_cols, 0.0)
        if adversary is not None and step >= adversary.start:
            g, parts = adversary.losses(audio, rec, oc["grad_clip"])
            loss = loss + g
        optimizer_step(loss, optim, params, oc["grad_clip"], ema, codec)
        step += 1
        bar.update(1)
        if mlog.due(step):
            lv, rv, cv = loss.item(), recon.item(), q.commit.item()
            parts = {k: float(v) for k, v in parts.items()}
            metrics = {"step": step, "loss": lv, "recon": rv, "commit": cv, "levels": levels, "lr": lr, **parts}
            mlog.write(step, [f"{lv:.5f}", f"{rv:.5f}", f"{cv:.5f}", levels, f"{lr:.3e}", *(f"{parts[k]:.5f}" for k in adv_cols)])
            bar.set_postfix(loss=f"{lv:.3f}")
        if valid is not None and dist_info.main and step % tc["eval_every"] == 0:
            ev = evaluate(ema.model if ema is not None else codec, loss_fn, valid, [3, 6, mc.levels])
            metrics.update(ev)
            append_jsonl(out / "valid.jsonl", {"step": step, **ev})
        if dist_info.main and (step % tc["save_every"] == 0 or budget.done(step)):
            if adversary is not None:
                save_state(disc_path, adversary.disc, adversary.optim, step, gen, {})
            save_state(state_path, codec, optim, step, gen, {"config": cfg}, ema)
    bar.close()
    mlog.close()
    if pool is not None:
        pool.shutdown()
    if dist_info.main and (step >= total or oc.get("minutes")):
        export((ema.model if ema is not None else codec).cpu(), out / "export", tokens=tokens)
    return metrics


def export(codec: SpeechCodec, out: Path, name: str = "sc16k", tokens: str = "") -> Path:
    """Write the inference weights (no EMA statistics) as an fp16 checkpoint directory. ``tokens``:
    the weights hash whose codes this codec shares (a decoder retrained on frozen codes), so that
    files and LM models made with those codes stay valid."""
    config = {"kind": "speech_codec", "name": name, **codec.config_dict(), **({"tokens": tokens} if tokens else {})}
    return save_pretrained(inference_state(codec), config, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", nargs="+", help="folders of audio files to train on (override the config)")
    ap.add_argument("--steps", type=int, help="override optim.steps")
    ap.add_argument("--minutes", type=float, help="override optim.minutes (a wall-clock budget the LR schedule follows)")
    ap.add_argument("--init", type=Path, metavar="DIR", help="start a new run from this checkpoint's weights")
    ap.add_argument("--export-only", type=Path, metavar="DIR", help="export <out>/state.safetensors as it is to DIR and exit")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.export_only:
        codec = SpeechCodec(CodecConfig(**cfg["model"]))
        codec.load_state_dict(substate(load_file(str(args.out / "state.safetensors")), "model."))
        print(export(codec, args.export_only))
        return 0
    if args.steps:
        cfg["optim"]["steps"] = args.steps
    if args.minutes:
        cfg["optim"]["minutes"] = args.minutes
    print(json.dumps(train(cfg, args.out, args.data, init=args.init)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
