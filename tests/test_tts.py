"""TTS / speech editing: marker layout, rails, cached == uncached, edits copy what they keep, recipe."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmar.checkpoint import inference_state, save_pretrained
from mmar.data.tts_corpus import Utterance, phone_frames, write_split
from mmar.errors import MmarError
from mmar.generation import SamplingConfig
from mmar.tasks import tts as T
from mmar.text.arpabet import PAUSE, PHONES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import train_tts  # noqa: E402

from recipe_helpers import losses, overridden  # noqa: E402

DEBUG = json.loads((ROOT / "recipes/configs/tts_debug.json").read_text())


pytestmark = pytest.mark.usefixtures("one_thread")


def random_utterance(rng: np.random.Generator, levels: int = 3) -> Utterance:
    """A fake utterance: a few phones, each 1–6 frames of codes that depend on the phone (learnable)."""
    n = int(rng.integers(4, 9))
    phones = rng.integers(0, len(PHONES), n).astype(np.uint8)
    lengths = rng.integers(1, 7, n)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    codes = np.concatenate([np.repeat((int(phones[i]) * 17 + np.arange(levels)[:, None] * 5) % 1024, lengths[i], 1)
                            for i in range(n)], 1).astype(np.int16)
    return Utterance(codes, phones, starts, {"text": "x", "voice": "slt", "name": "slt", "f0": 1.0, "stretch": 1.0, "shift": 0})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("tts_corpus")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("valid", 8)):
        write_split(d, split, [random_utterance(rng) for _ in range(n)])
    return d


@pytest.fixture(scope="module")
def tts():
    torch.manual_seed(0)
    config = T.export_config(DEBUG["model"], 3, max_phone_frames=6)
    m = T.from_config(config)
    m.model.eval()
    return m


def voice(tts, n_phones: int = 5, seed: int = 0) -> T.Voice:
    u = random_utterance(np.random.default_rng(seed))
    return T.Voice(torch.from_numpy(u.codes).long(), torch.from_numpy(u.phones).long(), torch.from_numpy(u.starts).long())


# -- layout ------------------------------------------------------------------------------------
def test_interleave_round_trip_and_marker_spans(tts):
    v = voice(tts)
    frames = T.interleave(tts, v.codes, v.phones, v.starts)
    assert frames.shape == (3, v.codes.shape[1] + len(v.phones))
    codes, phones, starts = T.deinterleave(tts, frames)
    assert torch.equal(codes, v.codes) and torch.equal(phones, v.phones) and torch.equal(starts, v.starts)
    spans = T.marker_spans(tts, frames, [(1, 3)])
    assert frames[0, spans[0][0]] == tts.marker_base + v.phones[1]
    assert spans[0][1] == int(v.starts[3]) + 3  # phone 3's marker, after 3 earlier markers


def test_training_rows_restore_to_the_frames(tts):
    gen = torch.Generator().manual_seed(0)
    rows = [(torch.from_numpy(u.codes).long(), torch.from_numpy(u.phones).long(), torch.from_numpy(u.starts).long())
            for u in (random_utterance(np.random.default_rng(i)) for i in range(6))]
    stream, lengths, prefix = T.training_batch(tts, rows, [True, False] * 3, gen)
    assert prefix.shape[0] == 6 and bool((prefix[:, -1] > 0).all())  # left-padded
    for i, (c, p, s) in enumerate(rows):
        frames, spans = tts.layout.restore_row(stream[i, :, : int(lengths[i])])
        assert torch.equal(frames, T.interleave(tts, c, p, s))
        assert (len(spans) > 0) == (i % 2 == 0)
        assert all(frames[0, a] >= tts.marker_base for a, _ in spans)  # spans start at a marker


def test_joint_model_is_causal_after_the_prefix(tts):
    gen = torch.Generator().manual_seed(1)
    rows = [(torch.from_numpy(u.codes).long(), torch.from_numpy(u.phones).long(), torch.from_numpy(u.starts).long())
            for u in [random_utterance(np.random.default_rng(3))]]
    stream, _, prefix = T.training_batch(tts, rows, [False], gen)
    with torch.no_grad():
        a = tts.model(codes=stream, prefix=prefix)
        changed = stream.clone()
        changed[:, :, 10:] = (changed[:, :, 10:] + 1) % 1024
        b = tts.model(codes=changed, prefix=prefix)
        p = prefix.shape[1]
        assert torch.allclose(a[:, : p + 10], b[:, : p + 10], atol=1e-5)
        assert not torch.allclose(a[:, p + 10 :], b[:, p + 10 :])
        other = prefix.clone()
        other[0, -1] = (other[0, -1] % len(PHONES)) + 1
        c = tts.model(codes=stream, prefix=other)
        assert not torch.allclose(a[:, 0], c[:, 0])  # the prefix is bidirectional: its first position sees the last


# -- decoding ----------------------------------------------------------------------------------
def check_rails(tts, tokens: torch.Tensor, end_id: int, phones: torch.Tensor) -> None:
    """One generated segment [K, S] (ended): only level 0 ends first, the cascade follows, phones in
    order, every phone 1..max frames."""
    frames = tts.layout.delay.revert(tokens[None])[0]  # [K, F]
    ends = [(frames[k] == end_id).nonzero().flatten().tolist() for k in range(3)]
    assert all(e == ends[0] for e in ends) and len(ends[0]) == 1, ends  # one end frame, the same at every level
    body = frames[:, : ends[0][0]]
    codes, got, starts = T.deinterleave(tts, body)
    assert torch.equal(got, phones)
    durations = torch.diff(torch.cat([starts, torch.tensor([codes.shape[1]])]))
    assert int(durations.min()) >= 1 and int(durations.max()) <= tts.max_phone_frames
    assert int(codes.max()) < 1024
    marker = body[0] >= tts.marker_base
    assert bool((body[1:, marker] == tts.ids.empty).all())


@pytest.mark.parametrize("prompted", [True, False])
def test_tts_rails_order_bound_and_end(tts, prompted):
    v = voice(tts) if prompted else None
    phones = torch.tensor([0, 5, 9, 12, 0])
    for seed in range(3):
        outs = T.synthesize_codes(tts, phones, v, num_samples=2, seed=seed)
        for o in outs:
            n = o.shape[1]
            assert len(phones) <= n <= len(phones) * tts.max_phone_frames + (tts.max_phone_frames if prompted else 0)


def test_rails_hold_on_raw_tokens(tts):
    phones = torch.tensor([3, 7, 0])
    rails = T.PhoneRails(tts, torch.zeros(3, 0, dtype=torch.long), phones, tts.ids.eos)
    from mmar.generation import CachedStepper, Sampler, StopRule, decode_loop, last_logits

    prefix = T.prefix_batch([phones])
    st = CachedStepper(tts.model, 1, 200)
    g = decode_loop(st, last_logits(st(prefix=prefix)), rails.max_steps(), Sampler(SamplingConfig(), torch.Generator().manual_seed(0), allowed=rails),
                    StopRule(tts.ids.eos, level=2, fill_id=tts.ids.empty))
    assert bool(g.finished[0])
    check_rails(tts, g.tokens[0, :, : int(g.lengths[0])], tts.ids.eos, phones)


def test_cached_equals_uncached(tts):
    v = voice(tts, seed=4)
    phones = torch.tensor([0, 5, 9, 0])
    a = T.synthesize_codes(tts, phones, v, num_samples=2, seed=7)
    b = T.synthesize_codes(tts, phones, v, num_samples=2, seed=7, cached=False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def _two_span_edit(tts, seed: int = 5):
    v = voice(tts, seed=seed)
    n = len(v.phones)
    new = [torch.tensor([4, 4]), torch.tensor([9])]
    ranges = [(1, 2), (n - 2, n - 1)]
    all_phones = torch.cat([v.phones[:1], new[0], v.phones[2 : n - 2], new[1], v.phones[n - 1 :]])
    return v, ranges, new, all_phones


def test_edit_keeps_codes_outside_the_spans(tts):
    v, ranges, new, all_phones = _two_span_edit(tts)
    for seed in range(2):
        for e in T.edit_codes(tts, v, ranges, new, all_phones, seed=seed, num_samples=3):
            codes, old, got = e.codes, e.old_spans, e.new_spans
            assert torch.equal(codes[:, : got[0][0]], v.codes[:, : old[0][0]])
            assert torch.equal(codes[:, got[0][1] : got[1][0]], v.codes[:, old[0][1] : old[1][0]])
            assert torch.equal(codes[:, got[1][1] :], v.codes[:, old[1][1] :])
            assert got[0][1] - got[0][0] >= 2 and got[1][1] - got[1][0] >= 1


def test_batched_edit_equals_uncached_reference(tts):
    """Rows of one batch end their spans at different steps; the kv-cache must agree with the
    full forward of each row, and a batch of one with the single-row call."""
    v, ranges, new, all_phones = _two_span_edit(tts, seed=6)
    a = T.edit_codes(tts, v, ranges, new, all_phones, seed=3, num_samples=4)
    b = T.edit_codes(tts, v, ranges, new, all_phones, seed=3, num_samples=4, cached=False)
    assert all(torch.equal(x.codes, y.codes) and x.new_spans == y.new_spans for x, y in zip(a, b))
    assert len({tuple(x.new_spans[0]) + tuple(x.new_spans[1]) for x in a}) > 1  # the rows really are ragged


def test_code_logprob_is_the_models_own_likelihood(tts):
    """The score of an edit's codes is the teacher-forced log-probability the model gives them: a
    padded batch scores each row as it scores alone, it equals a per-position log-softmax of a
    plain forward over the codes at steps ≥ ``start`` (special ids never count)."""
    v, ranges, new, all_phones = _two_span_edit(tts)
    cands = T.edit_codes(tts, v, ranges, new, all_phones, seed=1, num_samples=3)
    start = cands[0].start
    batch = T.code_logprob(tts, all_phones, [c.stream for c in cands], start)
    assert batch.shape == (3, tts.levels) and bool((batch < 0).all())
    for i, c in enumerate(cands):
        assert torch.allclose(T.code_logprob(tts, all_phones, [c.stream], start)[0], batch[i], atol=1e-5)
    s = cands[0].stream
    with torch.no_grad():
        logp = tts.model.logits(tts.model(codes=s[None], prefix=all_phones[None])[:, len(all_phones) - 1 : -1]).log_softmax(-1)[0]
    for level in range(tts.levels):
        pos = [t for t in range(start, s.shape[1]) if s[level, t] < tts.ids.codebook_size]
        want = torch.stack([logp[t, level, s[level, t]] for t in pos]).mean()
        assert torch.allclose(batch[0, level], want, atol=1e-5)
    assert not torch.allclose(T.code_logprob(tts, all_phones, [s], 0)[0], batch[0])  # the known codes count only from 0
    assert bool(T.code_logprob(tts, all_phones, [s], s.shape[1]).isnan().all())  # nothing generated: no score


def test_dtw_distance_aligns_stretched_copies():
    from tts_pick_study import dtw_distance, span_features

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    assert dtw_distance(x, x) == 0.0
    assert dtw_distance(x, np.repeat(x, 2, axis=0)) == 0.0  # a slower copy aligns at no cost
    y = x + rng.normal(size=x.shape)
    assert dtw_distance(x, y) > 0 and dtw_distance(x, y) == pytest.approx(dtw_distance(y, x))
    assert dtw_distance(x, y) < dtw_distance(x, y + 5)
    assert dtw_distance(x, x[:0]) == float("inf")
    audio = np.sin(np.arange(16000) * 0.05).astype(np.float32)
    f = span_features(audio, [(2, 10), (20, 25)], 320)
    assert f.shape == (13, 40) and np.isfinite(f).all()


def test_bad_prompts_and_sampling(tts):
    v = voice(tts)
    with pytest.raises(MmarError, match="malformed"):
        T.check_voice(tts, T.Voice(v.codes[:2], v.phones, v.starts))
    with pytest.raises(MmarError, match="malformed"):
        T.check_voice(tts, T.Voice(v.codes, v.phones, v.starts.flip(0)))
    with pytest.raises(MmarError, match="guidance"):
        T.synthesize_codes(tts, torch.tensor([1, 2]), v, sampling=SamplingConfig(cfg_scale=2.0))
    with pytest.raises(MmarError, match="nothing to say"):
        T.synthesize_codes(tts, torch.tensor([], dtype=torch.long), v)
    with pytest.raises(MmarError, match="unknown"):
        tts.phone_index(["hh", "zz"])
    config = T.export_config(DEBUG["model"], 3)
    for change in ({"kind": "image_ar"}, {"levels": 0}, {"phones": ["a", "a"]}, {"model": {"dim": 10**9}},
                   {"max_phone_frames": 0}, {"default_voice": [1]}):
        with pytest.raises(MmarError):
            T.from_config(config | change)


def test_phone_frames_gives_every_phone_a_frame():
    ids, starts = phone_frames([(PAUSE, 0.1), ("hh", 0.1), ("ah", 0.104), ("l", 0.3)], 16)
    assert [PHONES[i] for i in ids] == [PAUSE, "hh", "ah", "l"]
    assert starts.tolist() == [0, 5, 6, 7]
    assert phone_frames([(PAUSE, 0.01), ("hh", 0.02), ("ah", 0.03)], 2) is None  # 3 phones cannot fit in 2 frames


# -- recipe ------------------------------------------------------------------------------------
def test_debug_run_loss_falls_and_exports(corpus, tmp_path):
    metrics = train_tts.train(overridden(DEBUG, steps=60, lr=1e-2, warmup=2), tmp_path, corpus, progress=False)
    curve = losses(tmp_path)
    assert len(curve) == 60 and sum(curve[-5:]) / 5 < 0.7 * sum(curve[:5]) / 5
    assert metrics["valid_ce0"] > 0 and "ce0_wrong_text" in metrics
    tts = T.load_tts(tmp_path / "export")
    v = T.Voice.from_dict(tts.default_voice, tts)
    assert T.synthesize_codes(tts, torch.tensor([0, 3, 0]), v)[0].shape[0] == 3


def test_resume_equals_uninterrupted(corpus, tmp_path):
    from safetensors.torch import load_file

    a, b = tmp_path / "a", tmp_path / "b"
    c = overridden(DEBUG)
    train_tts.train(c, a, corpus, progress=False)
    train_tts.train(c, b, corpus, stop_after=3, progress=False)
    assert json.loads((b / "state.json").read_text())["step"] == 3
    train_tts.train(c, b, corpus, progress=False)
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert losses(a) == losses(b)
    assert (a / "export/model.safetensors").read_bytes() == (b / "export/model.safetensors").read_bytes()


def test_init_starts_from_a_checkpoint_and_refuses_other_shapes(corpus, tmp_path):
    from safetensors.torch import load_file

    src = make_tts_checkpoint(tmp_path)
    train_tts.train(overridden(DEBUG, {"init": str(src)}, steps=1, lr=0.0, warmup=1), tmp_path / "a", corpus, progress=False)
    before, after = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "a/state.safetensors"))
    for k, v in before.items():  # lr 0: the weights after one step are the checkpoint's
        assert torch.equal(v.float(), after[f"model.{k}"].float()), k
    other = overridden(DEBUG, {"init": str(src)}, steps=1)
    other["model"]["dim"] *= 2
    with pytest.raises(SystemExit, match="does not fit"):
        train_tts.train(other, tmp_path / "b", corpus, progress=False)


def make_tts_checkpoint(root: Path) -> Path:
    """A tiny random TTS checkpoint (3 levels of 1024 codes, ≤ 6 frames per phone) with a default voice."""
    u = random_utterance(np.random.default_rng(11))
    voice = {"codes": u.codes.astype(int).tolist(), "phones": u.phones.astype(int).tolist(), "starts": u.starts.astype(int).tolist(),
             "text": "a random voice"}
    config = T.export_config(DEBUG["model"], 3, max_phone_frames=6, default_voice=voice, name="tts-tiny")
    torch.manual_seed(2)
    d = root / "tts-tiny"
    save_pretrained(inference_state(T.from_config(config).model), config, d)
    return d


@pytest.mark.slow
def test_ddp_two_processes(corpus, tmp_path):
    import os
    import subprocess

    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(overridden(DEBUG, steps=3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "recipes/train_tts.py"), "--config", str(conf), "--out", str(tmp_path / "ddp"),
                        "--data", str(corpus)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ddp/export/model.safetensors").exists() and len(losses(tmp_path / "ddp")) == 3


def test_edit_plans_from_word_diffs():
    from mmar.tasks.speak import plan_edit

    # "pau hello pau world pau": hello = hh ah l ow, world = w er l d
    old = [PAUSE, "hh", "ah", "l", "ow", PAUSE, "w", "er", "l", "d", PAUSE]
    words, ranges = ["hello", "world"], [(1, 5), (6, 10)]
    sub = plan_edit(old, ranges, words, "hello there")  # substitution: world → there, with its pauses
    assert sub.ranges == [(5, 11)] and sub.new == [[PAUSE, "dh", "eh", "r", PAUSE]]
    assert sub.phones == old[:5] + sub.new[0]
    ins = plan_edit(old, ranges, words, "hello big world")  # insertion at a pause: the pause comes along
    assert ins.ranges == [(5, 6)] and ins.new == [[PAUSE, "b", "ih", "g"]]
    gone = plan_edit(old, ranges, words, "world")  # deletion: the word and its pauses become one pause
    assert gone.ranges == [(0, 6)] and gone.new == [[PAUSE]] and gone.phones == old[5:]
    with pytest.raises(MmarError, match="same words"):
        plan_edit(old, ranges, words, "Hello, world!")
    many = plan_edit(old * 3, [(1, 5), (6, 10), (12, 16), (17, 21), (23, 27), (28, 32)], words * 3,
                     "yes world hello no hello world ok", max_spans=3)
    assert len(many.ranges) <= 3


def test_shipped_tts_loads_the_codec_whose_codes_it_learnt():
    """With no codec given, the TTS model gets the shipped codec its config names, not merely the
    default one; a shipped codec with other codes is refused."""
    from mmar.tasks.codec import load_codec
    from mmar.tasks.speak import Speaker

    d = ROOT / "checkpoints" / "tts-16k-v1"  # learnt speech-codec-16k-v1, no longer the default codec
    if not (d / "model.safetensors").exists():
        pytest.skip(f"{d} is not here")
    sp = Speaker.load(d)
    assert sp.tts.codec_weights and sp.codec.speaks(sp.tts.codec_weights)
    others = [p for p in sorted((ROOT / "checkpoints").glob("speech-codec-16k*")) if not load_codec(p).speaks(sp.tts.codec_weights)]
    assert others  # the default codec and the one the TTS model learnt differ today
    with pytest.raises(MmarError, match="speaks codec weights"):
        Speaker.load(d, others[0])


def test_checkpoint_names_the_codec_its_corpus_was_built_with(tmp_path):
    """The exported config carries the codec weights the corpus recorded, not whichever codec is
    the default now; a corpus that recorded none is refused rather than guessed."""
    rng = np.random.default_rng(3)
    rows = [random_utterance(rng) for _ in range(4)]
    cfg = json.loads(json.dumps(DEBUG))
    cfg["data"]["codec_identity"] = True
    write_split(tmp_path / "old", "train", rows)
    with pytest.raises(SystemExit, match="does not record its codec"):
        train_tts.checkpoint_config(cfg, *train_tts.load_rows(tmp_path / "old", "train", 3), tmp_path / "old")
    write_split(tmp_path / "v1", "train", rows, codec_weights="3e8eaeba")
    config = train_tts.checkpoint_config(cfg, *train_tts.load_rows(tmp_path / "v1", "train", 3), tmp_path / "v1")
    assert config["codec"]["weights"] == "3e8eaeba"
