"""Moving-sprite clips: reproducible, captioned from their trajectories, split by sprite, and
measurable from pixels (the measure the video benchmark scores generated clips with)."""

import numpy as np
import pytest

from mmar.data.sprites import MOTION_WORDS, MOTIONS, SpriteClips, caption_of, motion_of, sprite_track
from mmar.text.captions import words


def test_clips_are_reproducible_and_sized(named_shapes_dir):
    a, b = SpriteClips(named_shapes_dir, "train"), SpriteClips(named_shapes_dir, "train")
    for i in range(5):
        ca, cb = a.clip(i), b.clip(i)
        assert ca.frames.shape == (16, 64, 64, 3) and ca.frames.dtype == np.uint8
        assert np.array_equal(ca.frames, cb.frames) and ca.caption == cb.caption
    assert not np.array_equal(a.clip(0).frames, SpriteClips(named_shapes_dir, "train", seed=1).clip(0).frames)
    long = SpriteClips(named_shapes_dir, "train", frames=40, size=96, sprite=20).clip(3)
    assert long.frames.shape == (40, 96, 96, 3)


@pytest.mark.parametrize("motion", MOTIONS)
def test_the_shortest_clips_hold_every_motion(named_shapes_dir, motion):
    c = SpriteClips(named_shapes_dir, "test", frames=2).clip(0, motion)
    assert c.frames.shape[0] == 2 and (motion != "appears" or np.isnan(c.centres[0, 0]) and not np.isnan(c.centres[1, 0]))


@pytest.mark.parametrize("motion", MOTIONS)
def test_captions_follow_the_trajectory_and_pixels_agree(named_shapes_dir, motion):
    clips = SpriteClips(named_shapes_dir, "test")
    for i in range(4):
        c = clips.clip(i, motion)
        assert c.caption.startswith(c.name) and (motion in c.caption)
        assert c.bounced == c.caption.endswith(", then bounces")
        assert motion_of(c.frames) == motion
        centres, _ = sprite_track(c.frames)
        present = ~np.isnan(c.centres[:, 0])
        assert np.array_equal(~np.isnan(centres[:, 0]), present)
        assert np.abs(centres[present] - c.centres[present]).max() < 2.5  # measured ≈ true centre


def test_splits_hold_their_own_sprites(named_shapes_dir):
    from mmar.data.emoji import load_split

    for split in ("train", "test"):
        clips = SpriteClips(named_shapes_dir, split)
        assert np.array_equal(clips.renders, load_split(named_shapes_dir, split).images)  # that split's renders only
        assert len(clips) == len(clips.names) > 0


def test_bad_parameters_and_a_blank_clip(named_shapes_dir):
    for kw in ({"frames": 1}, {"size": 8}, {"sprite": 40}, {"max_words": MOTION_WORDS}):
        with pytest.raises(ValueError):
            SpriteClips(named_shapes_dir, "train", **kw)
    with pytest.raises(ValueError):
        SpriteClips(named_shapes_dir, "train").clip(0, "spins")
    assert motion_of(np.full((8, 32, 32, 3), 255, np.uint8)) == "still"


@pytest.mark.parametrize("motion,bounced", [("left", True), ("up", False), ("grows", False), ("appears", False)])
def test_a_word_budget_shortens_the_name_and_keeps_the_motion(motion, bounced):
    name = "flag: south georgia & south sandwich islands"  # 7 words
    full = caption_of(name, motion, bounced)
    assert full.startswith(name) and caption_of(name, motion, bounced, 40) == full
    tail = full[len(name) + 1 :]
    for budget in range(MOTION_WORDS + 1, len(words(full)) + 1):
        short = caption_of(name, motion, bounced, budget)
        assert len(words(short)) <= budget and short.endswith(tail)
        assert words(short)[: -len(words(tail))] == words(name)[: budget - len(words(tail))]  # the name's leading words
    assert words(caption_of(name, motion, bounced, MOTION_WORDS + 1))[0] == "flag"
    with pytest.raises(ValueError):
        caption_of(name, "left", True, MOTION_WORDS)


def test_clips_with_a_word_budget_keep_their_motion(named_shapes_dir):
    clips = SpriteClips(named_shapes_dir, "train", max_words=MOTION_WORDS + 1)
    for i in range(12):
        c = clips.clip(i)
        assert len(words(c.caption)) <= MOTION_WORDS + 1
        assert c.motion in c.caption and c.bounced == c.caption.endswith(", then bounces")
