"""The multi-scale STFT discriminator: shapes, what its losses reward, and that they train."""

import pytest
import torch

from mmar.tokenizers.discriminator import (DiscriminatorConfig, MultiScaleSTFTDiscriminator, discriminator_loss,
                                           generator_losses)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny() -> MultiScaleSTFTDiscriminator:
    torch.manual_seed(0)
    return MultiScaleSTFTDiscriminator(DiscriminatorConfig(n_ffts=(128, 64), filters=8, dilations=(1, 2)))


def test_one_judgement_per_scale_with_bins_halved_per_strided_layer():
    d = tiny()
    out = d(torch.randn(3, 2000))
    assert len(out) == 2
    for (logits, feats), n_fft in zip(out, (128, 64)):
        frames = 2000 // (n_fft // 4) + 1
        assert logits.shape[:3] == (3, 1, frames) and len(feats) == 4
        bins = n_fft // 2 + 1
        assert feats[0].shape[-1] == bins and feats[-1].shape[-1] == -(-bins // 4)  # two stride-2 layers


def test_feature_matching_is_zero_for_the_real_audio_and_the_generator_gradient_reaches_it():
    d = tiny()
    x = torch.randn(2, 1500)
    adv, fm = generator_losses(d(x), d(x))
    assert fm.item() == 0
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_()
    adv, fm = generator_losses(d(x), d(y))
    assert fm.item() > 0
    (adv + fm).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_discriminator_learns_to_tell_clean_tones_from_noisy_ones():
    d = tiny()
    opt = torch.optim.Adam(d.parameters(), 1e-3, betas=(0.5, 0.9))
    t = torch.arange(2000) / 8000
    g = torch.Generator().manual_seed(1)

    def batch():
        f = 200 + 600 * torch.rand(8, 1, generator=g)
        real = torch.sin(2 * torch.pi * f * t)
        return real, real + 0.5 * torch.randn(real.shape, generator=g)

    first = None
    for _ in range(40):
        real, fake = batch()
        loss = discriminator_loss(d(real), d(fake))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_bad_sizes_are_refused():
    for bad in ({"n_ffts": ()}, {"n_ffts": (100,)}, {"filters": 0}, {"dilations": (0,)}):
        with pytest.raises(ValueError):
            DiscriminatorConfig(**bad)
