"""Checkpoints: where they are found, how they are read, and which tensors they hold.

A shipped checkpoint is ``<dir>/model.safetensors`` (inference weights) + ``<dir>/config.json``.
The weight hash written into codec files is the first 8 hex digits of the SHA-256 of the
safetensors file, so a file names exactly the weights that produced it.

Search path (:func:`find_checkpoint`): an explicit ``--checkpoint`` path, then
``$MMAR_CHECKPOINTS/<name>``, then the checkpoints shipped inside the package
(``mmar/checkpoints/<name>``, the repository's ``checkpoints/`` folder).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.resources import files
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write, write_json
from .errors import MmarError

TRAINING_ONLY = ("ema_", "initialized")  # buffers that training keeps and inference never reads
# The shipped checkpoint that holds each weights digest, or speaks its codes (the short ids of
# mmar.coding.header; a decoder retrained on frozen codes speaks its parent's). A
# file or model that names its codec's weights is served by that checkpoint when none is given, so
# files written under an earlier default keep decoding, a TTS model finds the codec it learnt and a
# video model the σ-VAE it learnt.
SHIPPED: dict[str, str] = {
    "3e8eaeba": "speech-codec-16k-v1", "463d917f": "speech-codec-16k", "44e826f7": "speech-codec-16k",
    "350d060a": "speech-lm-16k-v1", "4e8968ab": "speech-lm-16k",
    "cb19e633": "speech-lm-16k-v1", "b8a89d9a": "speech-lm-16k",  # the LMs run in integers (integer_identity)
    "9eb62162": "image-vae-64",
}


def find_checkpoint(name: str, explicit: Path | None = None) -> Path:
    """The checkpoint directory (or file) to load: ``explicit`` if given, else the first existing of
    ``$MMAR_CHECKPOINTS/<name>`` and the package's shipped ``<name>``; :class:`MmarError` lists
    every place it looked when none exists."""
    if explicit is not None:
        explicit = Path(explicit)
        if not explicit.exists():
            raise MmarError(f"checkpoint not found: {explicit}")
        return explicit
    looked = []
    if os.environ.get("MMAR_CHECKPOINTS"):
        looked.append(Path(os.environ["MMAR_CHECKPOINTS"]) / name)
    looked.append(Path(str(files("mmar") / "checkpoints" / name)))
    for place in looked:
        if place.exists():
            return place
    raise MmarError(f"checkpoint {name!r} not found; looked in {', '.join(map(str, looked))} "
                    "(give its path, e.g. --checkpoint PATH, or set MMAR_CHECKPOINTS to a folder holding it)")


def checkpoint_for(weights: str, explicit: Path | None = None) -> Path | None:
    """``explicit`` if given, else the shipped checkpoint holding ``weights`` (8 hex digits) when it
    is on the search path, else None (the caller's default applies)."""
    if explicit is not None or weights not in SHIPPED:
        return explicit
    try:
        return find_checkpoint(SHIPPED[weights])
    except MmarError:
        return None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_hash(path: Path) -> str:
    """First 8 hex digits of the SHA-256 of a file."""
    return file_sha256(path)[:8]


def substate(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` whose keys start with ``prefix`` (e.g. ``"model."``), prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def inference_state(source: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A module's state dict (or a state dict) without training-only buffers (EMA statistics,
    codebook-initialised flags): what a shipped checkpoint holds."""
    state = source.state_dict() if isinstance(source, torch.nn.Module) else source
    return {k: v for k, v in state.items() if not any(t in k for t in TRAINING_ONLY)}


def save_pretrained(state: dict[str, torch.Tensor], config: dict, out_dir: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write floating tensors of ``state`` in ``dtype`` plus ``config.json`` into ``out_dir`` (atomically per file)."""
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    write_json(config, out_dir / "config.json")
    return atomic_write(out_dir / "model.safetensors", lambda p: save_file(tensors, str(p)))


def load_pretrained(ckpt_dir: Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict, str]:
    """Read a checkpoint directory → (float32 state dict, config dict, weights hash); with
    ``kind``, refuse one whose config does not say ``"kind": kind``."""
    ckpt_dir = Path(ckpt_dir)
    weights, cfg = ckpt_dir / "model.safetensors", ckpt_dir / "config.json"
    if not weights.is_file() or not cfg.is_file():
        raise MmarError(f"{ckpt_dir} is not an mmar checkpoint (needs model.safetensors and config.json)")
    try:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(weights)).items()}
        config = json.loads(cfg.read_text())
    except Exception as e:  # damaged files
        raise MmarError(f"cannot read checkpoint {ckpt_dir}: {e}") from None
    if kind is not None and (not isinstance(config, dict) or config.get("kind") != kind):
        found = config.get("kind") if isinstance(config, dict) else type(config).__name__
        raise MmarError(f"{ckpt_dir} holds a {found!r:.40} checkpoint, not a {kind!r} one")
    return state, config, weights_hash(weights)


def check_weights_fit(path: Path, build, state: dict[str, torch.Tensor], what: str, spare: int = 0) -> None:
    """Build the model with ``build()`` on the meta device (nothing is allocated, whatever the
    config asks for) and check that ``state`` holds exactly its inference weights' shapes, plus at
    most ``spare`` other tensors (training statistics). :class:`MmarError` otherwise, naming ``what``
    the config failed to describe."""
    try:
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in inference_state(build()).items()}
    except (RuntimeError, ValueError, TypeError) as e:
        raise MmarError(f"{path}: config.json does not describe {what} ({str(e).splitlines()[0][:80]})") from None
    wrong = [k for k, shape in shapes.items() if k not in state or state[k].shape != shape]
    extra = sorted(set(state) - set(shapes))
    if wrong or len(extra) > spare:
        raise MmarError(f"{path}: weights do not match the config (e.g. {(wrong or extra)[0]})")


def load_task_model(path: Path, build, what: str):
    """A task checkpoint directory → the object ``build(config, where)`` makes from its config
    (with a ``.model`` module), its weights loaded and in eval mode, and ``.weights`` set to
    their hash. A state that does not fit is one :class:`MmarError` naming ``what``."""
    state, config, digest = load_pretrained(path)
    obj = build(config, str(path))
    try:
        obj.model.load_state_dict(state)
    except RuntimeError as e:
        raise MmarError(f"{path}: weights do not match the {what} config ({str(e).splitlines()[0][:80]})") from None
    obj.model.eval()
    obj.weights = digest
    return obj
