"""The emoji image set: splits by emoji (skin-tone variants together), deterministic, captioned,
non-blank renders; the training augmentation. Skipped without the Debian font / unicode-data."""

from collections import defaultdict

import numpy as np
import pytest
import torch

from mmar.data import emoji as E

pytest.importorskip("PIL")
needs_font = pytest.mark.skipif(not E.FONT.is_file(), reason="fonts-noto-color-emoji is not installed")
needs_table = pytest.mark.skipif(not E.EMOJI_TEST.is_file(), reason="unicode-data (emoji-test.txt) is not installed")

LIMIT = 700  # the first entries of emoji-test.txt: faces, hands with skin tones, people


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (E.FONT.is_file() and E.EMOJI_TEST.is_file()):
        pytest.skip("fonts-noto-color-emoji / unicode-data not installed")
    out = tmp_path_factory.mktemp("emoji")
    return out, E.build(out, limit=LIMIT)


@needs_table
def test_table_has_groups_and_cldr_names():
    entries = E.parse_emoji_test()
    assert len(entries) > 3000
    fox = next(e for e in entries if e.seq == "\U0001F98A")
    assert (fox.name, fox.cldr, fox.group, fox.subgroup) == ("fox face", "fox", "Animals & Nature", "animal-mammal")
    thumbs = next(e for e in entries if e.seq == "\U0001F44D\U0001F3FD")
    assert thumbs.base == "\U0001F44D" and thumbs.name == "thumbs up: medium skin tone"
    assert {"Smileys & Emotion", "People & Body", "Flags", "Symbols"} <= {e.group for e in entries}
    assert "Component" not in {e.group for e in entries}
    assert not next(e for e in entries if e.cldr == "left arrow").flippable


@needs_table
def test_split_fractions_and_variants_stay_together():
    entries = E.parse_emoji_test()
    split_of_base = defaultdict(set)
    for e in entries:
        split_of_base[e.base].add(E.split_of(e.base, 0))
    assert all(len(s) == 1 for s in split_of_base.values())  # skin-tone variants share their base's split
    counts = {s: sum(next(iter(v)) == s for v in split_of_base.values()) for s in E.SPLITS}
    n = sum(counts.values())
    for s, frac in zip(E.SPLITS, E.FRACTIONS):
        assert abs(counts[s] / n - frac) < 0.04, counts
    assert E.split_of("\U0001F98A", 0) == E.split_of("\U0001F98A", 0)
    assert any(E.split_of(b, 0) != E.split_of(b, 1) for b in list(split_of_base)[:50])  # the seed matters


@needs_font
@needs_table
def test_build_splits_captions_and_renders(built):
    out, index = built
    entries = index["entries"]
    assert len(entries) > 0.95 * LIMIT
    by_base = defaultdict(set)
    for e in entries:
        by_base[E.EmojiEntry(e["seq"], e["cldr"], e["group"], e["subgroup"]).base].add(e["split"])
        assert e["name"] and e["cldr"] and e["group"] and e["subgroup"]
        assert e["name"] == e["name"].lower()
    assert all(len(s) == 1 for s in by_base.values())
    seqs = {s: {e["seq"] for e in entries if e["split"] == s} for s in E.SPLITS}
    assert not (seqs["train"] & seqs["valid"]) and not (seqs["train"] & seqs["test"]) and not (seqs["valid"] & seqs["test"])
    assert all(seqs.values())
    for s in E.SPLITS:
        split = E.load_split(out, s)
        assert split.images.shape == (len(seqs[s]), 64, 64, 3) and split.images.dtype == np.uint8
        assert [e["seq"] for e in split.entries] == sorted(seqs[s], key=lambda q: next(e["row"] for e in split.entries if e["seq"] == q))
        assert not any(E.is_blank(img) for img in split.images)
        assert len({img.tobytes() for img in split.images}) > 0.9 * len(split.images)
        t = split.tensors()
        assert t.shape == (len(split.images), 3, 64, 64) and 0 <= t.min() and t.max() <= 1
        assert (t[:, :, 0, 0] > 0.95).all()  # white background
    grinning = next(e for e in entries if e["seq"] == "\U0001F600")
    assert grinning["name"] == "grinning face" and grinning["cldr"] == "grinning face"


@needs_font
@needs_table
def test_build_is_byte_reproducible(built, tmp_path):
    out, index = built
    again = E.build(tmp_path, limit=LIMIT)
    assert again["entries"] == index["entries"]
    for s in E.SPLITS:
        assert (tmp_path / f"{s}.npz").read_bytes() == (out / f"{s}.npz").read_bytes()
    assert E.build(out, limit=LIMIT) == index  # up to date: re-read


@needs_font
def test_renderer_draws_sequences_as_one_glyph():
    r = E.Renderer()
    for seq in ("\U0001F469\u200d\U0001F680", "\U0001F1EB\U0001F1F7", "\U0001F44D\U0001F3FD"):
        assert r.single_glyph(seq) and not E.is_blank(r(seq))
    assert not r.single_glyph("\U0001F98A\U0001F98A")
    assert E.is_blank(r(" "))


def test_augment_keeps_range_and_flips_only_where_allowed():
    x = torch.ones(4, 3, 64, 64)
    x[:, :, 20:40, 8:24] = torch.rand(4, 3, 1, 1)  # an asymmetric blob on white
    flippable = torch.tensor([True, False, True, False])
    g = torch.Generator().manual_seed(0)
    y = E.augment(x, flippable, g, shift=0.0, scale=(1.0, 1.0), flip=1.0)
    assert torch.allclose(y[flippable], x[flippable].flip(-1), atol=1e-5)
    assert torch.allclose(y[~flippable], x[~flippable], atol=1e-5)
    z = E.augment(x, flippable, torch.Generator().manual_seed(1))
    assert z.shape == x.shape and 0 <= z.min() and z.max() <= 1 + 1e-6
    assert (z[:, :, 0, 0] > 0.99).all()  # shifted-in border is white
    assert torch.equal(z, E.augment(x, flippable, torch.Generator().manual_seed(1)))  # seeded
