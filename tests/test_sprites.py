"""Moving-sprite clips: reproducible, captioned from their trajectories, split by sprite, and
measurable from pixels (the measure the video benchmark scores generated clips with)."""

import numpy as np
import pytest

from mmar.data.sprites import MOTIONS, SpriteClips, motion_of, sprite_track


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
    for kw in ({"frames": 1}, {"size": 8}, {"sprite": 40}):
        with pytest.raises(ValueError):
            SpriteClips(named_shapes_dir, "train", **kw)
    with pytest.raises(ValueError):
        SpriteClips(named_shapes_dir, "train").clip(0, "spins")
    assert motion_of(np.full((8, 32, 32, 3), 255, np.uint8)) == "still"
