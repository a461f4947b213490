"""The LMCodec models on top of the speech codec: an entropy model over the coarse levels
(drives range coding, see :mod:`mmar.coding.lm_coding`) and a fine-token model that
regenerates the fine levels at the receiver.

Fine-token model layout: at frame t its input is the coarse codes of frame t plus the fine
codes of frame t-1 (empty at t=0); heads L.. predict the fine codes of frame t, taken greedily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_pretrained
from ..errors import MmarError
from ..patterns import DelayPattern, SpecialIds
from ..transformer import CausalTransformer, KVCache, TransformerConfig

DEFAULT_LM_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "speech-lm-16k"


@dataclass
class LoadedLM:
    """Entropy model (K = coarse levels) + fine model (K = all levels) and their identity."""

    entropy: CausalTransformer
    fine: CausalTransformer
    coarse: int  # levels sent
    window: int  # kv-cache window, in stream steps / frames
    model_id: str
    weights: str
    codec_weights: str  # the codec whose tokens the models were trained on


def build_models(cfg: dict) -> tuple[CausalTransformer, CausalTransformer]:
    """Config dict (see recipes/configs/codec_lm_*.json "model") → (entropy, fine) models."""
    coarse, levels = cfg["coarse"], cfg["levels"]
    ent = CausalTransformer(TransformerConfig(**{**cfg["entropy"], "num_codebooks": coarse, "codebook_size": cfg["codebook_size"]}))
    fine = CausalTransformer(TransformerConfig(**{**cfg["fine"], "num_codebooks": levels, "codebook_size": cfg["codebook_size"]}))
    return ent, fine


def load_lm(path: Path | None = None) -> LoadedLM:
    """Load a ``speech_lm`` checkpoint directory (default: the shipped ``checkpoints/speech-lm-16k``)."""
    path = Path(path) if path else DEFAULT_LM_CHECKPOINT
    state, cfg, digest = load_pretrained(path)
    if cfg.get("kind") != "speech_lm":
        raise MmarError(f"{path} holds a {cfg.get('kind')!r} checkpoint, not a speech LM")
    ent, fine = build_models(cfg)
    try:
        ent.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("entropy.")})
        fine.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("fine.")})
    except RuntimeError as e:
        raise MmarError(f"{path}: weights do not match the config ({str(e).splitlines()[0]})") from None
    return LoadedLM(ent.eval(), fine.eval(), cfg["coarse"], cfg["window"], cfg.get("name", path.name), digest, cfg["codec_weights"])


def entropy_batch(coarse: torch.Tensor, empty: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pair for the entropy model. coarse [B, L, T] → (inputs [B, L, S], targets [B, L, S]),
    S = T + L - 1: the delayed stream shifted right behind a start step of empties; targets use
    the empty id where nothing is coded (ignore it in the loss)."""
    stream = DelayPattern(coarse.shape[1]).build(coarse, empty)
    start = torch.full_like(stream[..., :1], empty)
    return torch.cat([start, stream[..., :-1]], dim=-1), stream


def fine_inputs(codes: torch.Tensor, coarse: int, empty: int) -> torch.Tensor:
    """codes [B, K, T] → fine-model inputs [B, K, T]: coarse levels of frame t, fine levels of frame t-1."""
    fine_prev = torch.cat([torch.full_like(codes[:, coarse:, :1], empty), codes[:, coarse:, :-1]], dim=-1)
    return torch.cat([codes[:, :coarse], fine_prev], dim=1)


class FineGenerator:
    """Streaming fine-level prediction: push(coarse [L, t]) → all levels [K, t] (greedy, one step per frame)."""

    def __init__(self, lm: LoadedLM):
        self.lm, self.model = lm, lm.fine
        self.ids = SpecialIds(self.model.cfg.codebook_size)
        self.cache = KVCache(self.model.cfg, 1, capacity=lm.window, window=lm.window)
        self.prev = torch.full((self.model.cfg.num_codebooks - lm.coarse,), self.ids.empty)

    @torch.no_grad()
    def push(self, coarse: np.ndarray) -> np.ndarray:
        c, size = self.lm.coarse, self.model.cfg.codebook_size
        out = np.zeros((self.model.cfg.num_codebooks, coarse.shape[1]), dtype=np.int64)
        out[:c] = coarse
        for t in range(coarse.shape[1]):
            tokens = torch.cat([torch.from_numpy(coarse[:, t]), self.prev]).view(1, -1, 1)
            logits = self.model.logits(self.model(codes=tokens, cache=self.cache))[0, 0, c:, :size]
            self.prev = logits.argmax(-1)
            out[c:, t] = self.prev.numpy()
        return out
