"""Emoji images with captions: Noto Color Emoji rendered with Pillow at 64×64 RGB on white.

    python -m mmar.data.emoji --out data/emoji [--size 64] [--seed 0] [--force]

Sources (Debian packages; ``make system-deps`` installs them):

- ``fonts-noto-color-emoji`` (``NotoColorEmoji.ttf``, CBDT bitmaps that load only at the 109-px
  strike; Pillow's raqm layout turns ZWJ sequences, skin tones and flags into one glyph);
- ``unicode-data`` (``/usr/share/unicode/emoji/emoji-test.txt``, Unicode 15.0 like the font):
  every fully-qualified emoji with its CLDR short name and its ``# group:`` / ``# subgroup:``.

Per emoji (``index.json``): ``seq`` (the string), ``codepoints`` ("1F98A"), ``name`` (the
lower-case Unicode character name of a single code point, "fox face"; the CLDR name for
sequences and for characters newer than Python's ``unicodedata``, lower-cased), ``cldr`` (the CLDR
short name as written, "fox", "OK hand"), ``aliases`` (the PyPI ``emoji`` package's names, "fox face", when it is installed),
``group``/``subgroup`` (coarse labels), ``flippable`` (whether a mirror image keeps the meaning),
``split`` and ``row`` (its image in ``<split>.npz``).

Splits are by emoji, never by image: a seeded hash of the code points with skin-tone modifiers
and variation selectors removed sends an emoji and all its skin-tone variants to the same split
(80 / 10 / 10 % of base emoji → train / valid / test; test is never trained on). Renders that are
blank, or that the font lays out as more than one glyph (unsupported sequences), are dropped.

Images: ``<out>/{train,valid,test}.npz`` holding ``images`` uint8 [N, size, size, 3]; the same
font, Pillow and options give byte-identical files (fixed zip timestamps). A rerun with the same
options and font only re-reads ``index.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_write, write_json
from ..errors import MmarError, command

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
SPLITS = ("train", "valid", "test")
FRACTIONS = (0.8, 0.1, 0.1)
STRIKE = 109  # the only size at which Pillow loads the CBDT bitmaps
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
VS16 = "\ufe0f"
FORMAT = 1  # bump when the layout of the cache changes


@dataclass
class EmojiEntry:
    """One emoji as listed in emoji-test.txt (fully-qualified)."""

    seq: str
    cldr: str
    group: str
    subgroup: str

    @property
    def codepoints(self) -> str:
        return " ".join(f"{ord(c):04X}" for c in self.seq)

    @property
    def base(self) -> str:
        """The sequence without skin-tone modifiers and variation selectors: its split key."""
        return "".join(c for c in self.seq if c not in SKIN_TONES and c != VS16)

    @property
    def name(self) -> str:
        """Lower-case Unicode character name of a single code point (else the lower-case CLDR name)."""
        chars = self.seq.replace(VS16, "")
        if len(chars) == 1:
            uname = unicodedata.name(chars, "")
            if uname:
                return uname.lower()
        return self.cldr.lower()

    @property
    def flippable(self) -> bool:
        """Whether a horizontal mirror image still shows this emoji: not for symbols (text,
        arrows, signs), flags, clocks, or anything whose name says left/right/pointing."""
        words = f"{self.cldr} {self.name}"
        return self.group not in ("Symbols", "Flags") and self.subgroup not in ("time", "keycap") and not any(
            w in words for w in ("left", "right", "pointing", "letter", "input"))


def parse_emoji_test(path: Path = EMOJI_TEST) -> list[EmojiEntry]:
    """emoji-test.txt → its fully-qualified entries in file order (components such as bare skin
    tones and hair styles are left out)."""
    if not path.is_file():
        raise MmarError(f"{path} not found: install the Debian package unicode-data (make system-deps)")
    group = subgroup = ""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            points, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() != "fully-qualified" or group == "Component":
                continue
            seq = "".join(chr(int(p, 16)) for p in points.split())
            # comment: " 🦊 E3.0 fox"
            cldr = comment.strip().split(" ", 2)[2].strip()
            out.append(EmojiEntry(seq, cldr, group, subgroup))
    return out


def split_of(base: str, seed: int) -> str:
    """Seeded hash of a base sequence → "train" / "valid" / "test" (80 / 10 / 10 %)."""
    key = f"{seed}|" + " ".join(f"{ord(c):X}" for c in base)
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, frac in zip(SPLITS, FRACTIONS):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def aliases_of(seq: str, cldr: str) -> list[str]:
    """Other English names from the PyPI ``emoji`` package (":fox_face:" → "fox face"); [] without it."""
    try:
        import emoji
    except ImportError:
        return []
    data = emoji.EMOJI_DATA.get(seq) or emoji.EMOJI_DATA.get(seq.replace(VS16, ""))
    if not data:
        return []
    names = [data.get("en", "")] + list(data.get("alias", []))
    clean = [n.strip(":").replace("_", " ").lower() for n in names if n]
    return sorted({n for n in clean if n and n != cldr.lower()})


class Renderer:
    """Draws one emoji string as a ``size``×``size`` RGB uint8 image on white (alpha composited)."""

    def __init__(self, font: Path = FONT, size: int = 64):
        from PIL import ImageFont

        if not Path(font).is_file():
            raise MmarError(f"{font} not found: install the Debian package fonts-noto-color-emoji (make system-deps)")
        self.font = ImageFont.truetype(str(font), size=STRIKE)
        self.size = size
        self.advance = self.font.getlength("\U0001F98A")  # one glyph's width

    def single_glyph(self, seq: str) -> bool:
        """Whether the font lays ``seq`` out as one glyph (unsupported sequences fall apart)."""
        return self.font.getlength(seq) <= 1.2 * self.advance

    def __call__(self, seq: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        side = int(self.advance) + 2
        layer = Image.new("RGBA", (side, side), (255, 255, 255, 0))
        ImageDraw.Draw(layer).text((side / 2, side / 2), seq, font=self.font, embedded_color=True, anchor="mm")
        white = Image.new("RGBA", (side, side), (255, 255, 255, 255))
        img = Image.alpha_composite(white, layer).convert("RGB").resize((self.size, self.size), Image.LANCZOS)
        return np.asarray(img, dtype=np.uint8)


def is_blank(image: np.ndarray, min_fraction: float = 0.005) -> bool:
    """True when fewer than ``min_fraction`` of the pixels of uint8 [H, W, 3] differ visibly from white."""
    return float((image.min(axis=-1) < 245).mean()) < min_fraction


def save_images(path: Path, images: np.ndarray) -> Path:
    """Write uint8 [N, H, W, 3] as ``path`` (.npz, key ``images``) with fixed zip timestamps (byte-reproducible)."""

    def write(tmp: Path) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(images, dtype=np.uint8))
        info = zipfile.ZipInfo("images.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr(info, buf.getvalue())

    return atomic_write(path, write)


def build(out: Path, size: int = 64, seed: int = 0, font: Path = FONT, emoji_test: Path = EMOJI_TEST,
          force: bool = False, limit: int | None = None) -> dict:
    """Render, split and cache the emoji set in ``out``; returns the index (see the module doc)."""
    from PIL import __version__ as pillow_version

    from ..checkpoint import file_sha256

    options = {"format": FORMAT, "size": size, "seed": seed, "limit": limit, "font_sha256": file_sha256(Path(font)),
               "emoji_test_sha256": file_sha256(Path(emoji_test)), "pillow": pillow_version}
    index_path = out / "index.json"
    if not force and index_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("options") == options and all((out / f"{s}.npz").is_file() for s in SPLITS):
            return index
    renderer = Renderer(font, size)
    entries = parse_emoji_test(emoji_test)[:limit]
    images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    records, dropped = [], Counter()
    for e in entries:
        if not renderer.single_glyph(e.seq):
            dropped["not one glyph"] += 1
            continue
        img = renderer(e.seq)
        if is_blank(img):
            dropped["blank"] += 1
            continue
        split = split_of(e.base, seed)
        records.append({"seq": e.seq, "codepoints": e.codepoints, "name": e.name, "cldr": e.cldr,
                        "aliases": aliases_of(e.seq, e.cldr), "group": e.group, "subgroup": e.subgroup,
                        "flippable": e.flippable, "split": split, "row": len(images[split])})
        images[split].append(img)
    out.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        stack = np.stack(images[s]) if images[s] else np.zeros((0, size, size, 3), np.uint8)
        save_images(out / f"{s}.npz", stack)
    index = {"options": options, "dropped": dict(dropped), "entries": records}
    write_json(index, index_path)
    return index


@dataclass
class EmojiSplit:
    """One split: images uint8 [N, H, W, 3] and their index records (same order)."""

    images: np.ndarray
    entries: list[dict]

    def tensors(self) -> torch.Tensor:
        """The images as float32 [N, 3, H, W] in [0, 1]."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div_(255)

    @property
    def flippable(self) -> torch.Tensor:
        """bool [N]: whether each image may be mirrored in augmentation."""
        return torch.tensor([bool(e.get("flippable", False)) for e in self.entries], dtype=torch.bool)


def load_split(root: Path, split: str) -> EmojiSplit:
    """Read ``<root>/<split>.npz`` + its records from ``<root>/index.json`` (written by :func:`build`)."""
    root = Path(root)
    index_path, npz = root / "index.json", root / f"{split}.npz"
    if not index_path.is_file() or not npz.is_file():
        raise MmarError(f"{root} holds no emoji {split!r} split: build it with python -m mmar.data.emoji --out {root}")
    entries = sorted((e for e in json.loads(index_path.read_text())["entries"] if e["split"] == split), key=lambda e: e["row"])
    with np.load(npz) as z:
        images = z["images"]
    if len(images) != len(entries):
        raise MmarError(f"{npz} holds {len(images)} images but index.json lists {len(entries)}: rebuild with --force")
    return EmojiSplit(images, entries)


def augment(images: torch.Tensor, flippable: torch.Tensor, gen: torch.Generator, shift: float = 0.06,
            scale: tuple[float, float] = (0.9, 1.1), flip: float = 0.5) -> torch.Tensor:
    """Light training augmentation of images float [B, 3, H, W] in [0, 1] on white: a random
    shift of up to ``shift`` × the side and a zoom in ``scale`` (uncovered pixels become white),
    and a horizontal flip with probability ``flip`` where ``flippable`` [B] allows it. All draws
    come from ``gen`` (a resumed run repeats them)."""
    b = images.shape[0]
    s = torch.empty(b).uniform_(*scale, generator=gen)
    t = torch.empty(b, 2).uniform_(-shift, shift, generator=gen) * 2  # in [-1, 1] grid units
    mirror = (torch.rand(b, generator=gen) < flip) & flippable.cpu()
    sx = torch.where(mirror, -1.0, 1.0) / s
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, 1.0 / s
    theta[:, :, 2] = -t
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    # sample the ink (1 − image) with zero padding, so that what comes in from outside is white
    return 1 - F.grid_sample(1 - images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def makeup(index: dict) -> str:
    """A table of the set: emoji per split and per group, and what was dropped."""
    entries = index["entries"]
    groups = sorted({e["group"] for e in entries})
    per = Counter((e["group"], e["split"]) for e in entries)
    lines = [f"{'group':<22}" + "".join(f"{s:>7}" for s in SPLITS) + f"{'all':>7}"]
    for g in groups:
        row = [per[(g, s)] for s in SPLITS]
        lines.append(f"{g:<22}" + "".join(f"{n:>7}" for n in row) + f"{sum(row):>7}")
    tot = [sum(per[(g, s)] for g in groups) for s in SPLITS]
    lines.append(f"{'all':<22}" + "".join(f"{n:>7}" for n in tot) + f"{sum(tot):>7}")
    bases = {s: len({e['codepoints'] for e in entries if e['split'] == s and not any(
        f"{t:X}" in e['codepoints'].split() for t in range(0x1F3FB, 0x1F400))}) for s in SPLITS}
    lines.append("emoji without skin tone per split: " + ", ".join(f"{s} {n}" for s, n in bases.items()))
    lines.append(f"dropped: {index.get('dropped') or 'none'}; flippable: {sum(e['flippable'] for e in entries)}")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/emoji"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="split hash seed")
    ap.add_argument("--font", type=Path, default=FONT)
    ap.add_argument("--emoji-test", type=Path, default=EMOJI_TEST)
    ap.add_argument("--limit", type=int, help="only the first N emoji of emoji-test.txt (quick checks)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    args = ap.parse_args(argv)
    index = build(args.out, args.size, args.seed, args.font, args.emoji_test, args.force, args.limit)
    print(makeup(index))
    return 0


if __name__ == "__main__":
    sys.exit(main())
