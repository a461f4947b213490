"""The LMCodec models on top of the speech codec: an entropy model over the coarse levels
(drives range coding, see :mod:`mmar.coding.lm_coding`) and a fine-token model that
regenerates the fine levels at the receiver.

Fine-token model layout: its input at frame t is the coarse codes of frame t (so it sees the
coarse codes of frames ≤ t, never its own guesses); its heads predict the fine codes of frame t.
Frames are independent given the coarse codes, so a whole block of frames is one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import find_checkpoint, load_pretrained, substate
from ..errors import MmarError
from ..generation import CachedStepper
from ..heads import codebook_vocab
from ..integer_transformer import IntegerTransformer, integer_identity
from ..patterns import DelayPattern
from ..transformer import CausalTransformer, TransformerConfig


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
    rdo: float = 0.0  # default rate-distortion λ for encoding (see coding.lm_coding.RateDistortion)
    integer: bool = True  # the range coder runs the entropy model in integers: files decode on every CPU
    _integer_model: IntegerTransformer | None = field(default=None, repr=False)

    @property
    def coded_weights(self) -> str:
        """The LM weights a file coded by this LM names: the integer identity of ``weights``
        (:func:`~mmar.integer_transformer.integer_identity`), or ``weights`` when coding in floats."""
        return integer_identity(self.weights) if self.integer else self.weights

    def coder(self) -> CausalTransformer | IntegerTransformer:
        """The entropy model as the range coder runs it (in integers unless ``integer`` is False)."""
        return self._integer() if self.integer else self.entropy

    def _integer(self) -> IntegerTransformer:
        if self._integer_model is None:  # built once (about a second), shared with the copies coding() makes
            self._integer_model = IntegerTransformer(self.entropy)
        return self._integer_model

    def coding(self, weights: str) -> LoadedLM | None:
        """This LM set to the arithmetic of files that name LM ``weights`` (float weights: files
        written before integer coding); None if they name other weights."""
        if weights == self.weights:
            return replace(self, integer=False)
        if weights == integer_identity(self.weights):
            self._integer()
            return replace(self, integer=True)
        return None

    @property
    def levels(self) -> int:
        """Levels the decoder outputs: the coarse ones sent plus the fine ones predicted."""
        return self.coarse + len(self.fine.cfg.out_vocab)


def build_models(cfg: dict) -> tuple[CausalTransformer, CausalTransformer]:
    """Config dict (see recipes/configs/codec_lm_*.json "model") → (entropy, fine) models.
    Both read the coarse levels (codes + :class:`SpecialIds`); the fine model's heads score the fine levels."""
    coarse, fine_levels, size = cfg["coarse"], cfg["levels"] - cfg["coarse"], cfg["codebook_size"]
    ent = CausalTransformer(TransformerConfig(**cfg["entropy"], vocab=codebook_vocab(size, coarse)))
    fine = CausalTransformer(TransformerConfig(**cfg["fine"], vocab=codebook_vocab(size, coarse),
                                               head_vocab=codebook_vocab(size, fine_levels)))
    return ent, fine


def load_lm(path: Path | None = None) -> LoadedLM:
    """Load a ``speech_lm`` checkpoint directory (default: ``speech-lm-16k`` from the checkpoint search path)."""
    path = find_checkpoint("speech-lm-16k", path)
    state, cfg, digest = load_pretrained(path, kind="speech_lm")
    ent, fine = build_models(cfg)
    try:
        ent.load_state_dict(substate(state, "entropy."))
        fine.load_state_dict(substate(state, "fine."))
    except RuntimeError as e:
        raise MmarError(f"{path}: weights do not match the config ({str(e).splitlines()[0]})") from None
    return LoadedLM(ent.eval(), fine.eval(), cfg["coarse"], cfg["window"], cfg.get("name", path.name), digest, cfg["codec_weights"],
                    cfg.get("rdo", 0.0))


def entropy_batch(coarse: torch.Tensor, empty: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pair for the entropy model. coarse [B, L, T] → (inputs [B, L, S], targets [B, L, S]),
    S = T + L - 1: the delayed stream shifted right behind a start step of empties; targets use
    the empty id where nothing is coded (ignore it in the loss)."""
    stream = DelayPattern(coarse.shape[1]).build(coarse, empty)
    start = torch.full_like(stream[..., :1], empty)
    return torch.cat([start, stream[..., :-1]], dim=-1), stream


def expected_vectors(logits: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """Fine-level logits [..., F, V] and codebooks [F, V, D] → the sum over levels of each level's
    codebook vector expected under its distribution [..., D]."""
    return torch.einsum("...fv,fvd->...d", logits.softmax(-1), books)


class FineGenerator:
    """Streaming fine-level prediction: push(coarse [L, t]) → latents [1, D, t] for the codec decoder.

    The latent of a frame is the sum of its coarse codebook vectors plus, per fine level, the
    codebook vector expected under the model's distribution: the model's minimum-squared-error
    estimate of the fine residual. (Taking the most likely code per level instead measured
    worse than sending the coarse levels alone: PESQ-WB 1.168 vs 1.215, see the LM's card.)
    A block of up to ``window`` frames is one step of the model (:class:`CachedStepper`).
    """

    def __init__(self, lm: LoadedLM, codebooks: list[torch.Tensor]):
        self.lm = lm
        self.coarse_books = codebooks[: lm.coarse]  # L × [V, D]
        self.fine_books = torch.stack(codebooks[lm.coarse : lm.levels])  # [F, V, D]
        self.size = self.fine_books.shape[1]
        self.stepper = CachedStepper(lm.fine, 1, capacity=2 * lm.window - 1, window=lm.window)

    @torch.no_grad()
    def push(self, coarse: np.ndarray) -> torch.Tensor:
        codes = torch.from_numpy(coarse).long()
        z = sum(book[codes[k]] for k, book in enumerate(self.coarse_books))  # [t, D]
        parts = []
        for i in range(0, codes.shape[1], self.lm.window):  # appends of ≤ window frames fit the ring
            logits = self.stepper(codes=codes[None, :, i : i + self.lm.window])[0, :, :, : self.size]
            parts.append(expected_vectors(logits, self.fine_books))
        fine = torch.cat(parts) if parts else torch.zeros_like(z)
        return (z + fine).T[None]
