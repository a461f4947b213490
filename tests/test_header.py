"""The .mmc header: fields and their bounds, the v1 JSON and v2 binary forms, the shipped models'
short ids, and the fixed overhead of their files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from container_helpers import ROOT, header_v2, make_header, parse_v2, shipped_header
from mmar.coding.bitpack import packed_size
from mmar.coding.container import Header, container_bytes
from mmar.checkpoint import SHIPPED
from mmar.coding.header import CODEC_IDS, LM_IDS, RATES
from mmar.errors import ContainerError
from mmar.integer_transformer import integer_identity


# -- header: fields ------------------------------------------------------------

def test_header_json_round_trip():
    for h in (make_header(), make_header(input_rate=16000, extra={}, mode="lm"),
              make_header(input_rate=16000, mode="lm", extra={"lm": "tiny", "lmw": "beef"})):
        if h.mode == "lm" and "lm" not in h.extra:
            with pytest.raises(ContainerError, match="needs extra 'lm' and 'lmw'"):
                h.to_json()
            continue
        js = h.to_json()
        assert b" " not in js
        assert Header.from_json(js) == h
        assert Header.from_json(js.decode()) == h
    assert b'"i"' not in make_header(input_rate=16000, extra={}).to_json()  # redundant field omitted


@pytest.mark.parametrize("kw", [
    dict(levels=0), dict(levels=65), dict(bits=0), dict(bits=17), dict(sample_rate=-1), dict(levels=True),
    dict(frame_rate=50.0), dict(mode="zip"), dict(model=""), dict(model="x" * 200), dict(weights="XYZ"),
    dict(weights=""), dict(num_samples=-5), dict(extra=[1]), dict(extra={"ni": 264600, "a": 1}),
    dict(extra={}),  # ni missing although the input rate differs
    dict(input_rate=16000),  # ni present although it does not
    dict(extra={"ni": 1 << 40}),  # ni does not match num_samples: could ask a decoder for 2**40 samples
    dict(extra={"ni": 264600 + 3}), dict(extra={"ni": 264600 - 5}), dict(extra={"ni": 264600.0}),
    dict(frame_rate=48), dict(frame_rate=32000),  # not a whole number of samples per frame
    dict(extra={"ni": 264600, "lm": "x", "lmw": "ab"}),  # LM fields in a raw header
    dict(mode="lm", extra={"ni": 264600, "lm": "x"}), dict(mode="lm", extra={"ni": 264600, "lm": "x", "lmw": "AB"}),
    dict(mode="lm", extra={"ni": 264600, "lm": "x", "lmw": "ab", "rdo": float("nan")}),
    dict(mode="lm", extra={"ni": 264600, "lm": "x", "lmw": "ab", "rdo": -1.0}),
    dict(mode="lm", extra={"ni": 264600, "lm": "", "lmw": "ab"}),
])
def test_header_rejects_bad_fields(kw):
    for encode in (Header.to_json, header_v2):
        with pytest.raises(ContainerError, match="invalid header"):
            encode(make_header(**kw))


@pytest.mark.parametrize("text", [
    b"", b"[]", b"{", b'{"m":"a"}', b'{"zz":1}', b"\xff\xfe", b"[" * 5000, b'{"m":"a","m":"b"}',
    b'{"m":"a","w":"ab","r":NaN}', b'{"m":"a","w":"ab","r":1' + b"0" * 5000 + b"}",
])
def test_header_from_json_rejects_garbage(text):
    with pytest.raises(ContainerError):
        Header.from_json(text)


def test_header_error_is_one_line():
    with pytest.raises(ContainerError) as e:
        Header.from_json(b'{"m":\n\n"a"')
    assert "\n" not in str(e.value)


# -- header: v2 encoding -------------------------------------------------------

V2_CASES = {
    "shipped raw 16k": (shipped_header(1.0), 12),
    "shipped raw 44.1k": (shipped_header(1.0, 44100), 13),
    "shipped raw 10 s 44.1k": (shipped_header(10.0, 44100), 14),
    "shipped lm, default λ": (shipped_header(1.0, lm=True), 13),
    "shipped lm 44.1k, 10 s": (shipped_header(10.0, 44100, lm=True), 15),
    "shipped lm, λ 0.5 (float16)": (shipped_header(1.0, lm=True, rdo=0.5), 15),
    "shipped lm, λ 0.1 (float64)": (shipped_header(1.0, lm=True, rdo=0.1), 21),
    "shipped lm, λ 0": (shipped_header(1.0, lm=True, rdo=0.0), 15),
    "shipped lm, no λ": (Header(**{**shipped_header(1.0, lm=True).__dict__, "extra": {"lm": "lm16k", "lmw": "350d060a"}}), 13),
    "explicit identity": (make_header(), None),
    "explicit identity, odd hash, unicode name": (make_header(model="réseau-é", weights="abc"), None),
    "explicit LM": (shipped_header(1.0, lm=True).__class__(**{**shipped_header(1.0, lm=True).__dict__,
                                                              "extra": {"lm": "tiny-lm", "lmw": "beef01", "rdo": 3.0}}), None),
    "explicit input rate": (Header(**{**shipped_header(1.0).__dict__, "input_rate": 37000, "extra": {"ni": 37000}}), None),
    "chunk_frames 100": (Header(**{**shipped_header(1.0).__dict__, "chunk_frames": 100}), None),
    "empty": (Header(**{**shipped_header(0.0).__dict__}), 11),
    "longest": (make_header(num_samples=1 << 48, levels=64, bits=16, extra={"ni": (1 << 48) * 44100 // 16000},
                            chunk_frames=1 << 24), None),
    "known name, other rates": (Header(**{**shipped_header(1.0).__dict__, "sample_rate": 24000, "input_rate": 24000,
                                          "num_samples": 24000}), None),
}


@pytest.mark.parametrize("name", V2_CASES)
def test_v2_header_round_trip(name):
    h, size = V2_CASES[name]
    data = header_v2(h)
    back, n = parse_v2(data + b"rest")
    assert back == h and n == len(data)
    assert header_v2(back) == data  # one encoding per header
    assert type(back.extra.get("rdo", 0.0)) is float
    if size is not None:
        assert len(data) == size


def test_v2_worked_example_in_the_docstring():
    import mmar.coding.header_v2 as mod

    data = header_v2(shipped_header(1.0))
    assert " ".join(f"{b:02x}" for b in data[:4]) + "  02  00  03  02  80 7d  " in mod.__doc__
    assert data.hex() == "4d4d41430200030280" "7d" + data[-2:].hex() and data[-2:].hex(" ") in mod.__doc__


def valid_headers():
    @st.composite
    def make(draw):
        sr_hop = draw(st.sampled_from([(16000, 320), (24000, 320), (8000, 80), (1, 1), (1_000_000, 1)]))
        sr, fr = sr_hop[0], sr_hop[0] // sr_hop[1]
        known = draw(st.booleans())
        model, weights, bits = ("sc16k", "3e8eaeba", 10) if known else (
            draw(st.text(min_size=1, max_size=128)), draw(st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True)), draw(st.integers(1, 16)))
        n = draw(st.integers(0, 1 << 48))
        ir = draw(st.one_of(st.just(sr), st.sampled_from(RATES), st.integers(1, 1_000_000)))
        extra = {}
        if ir != sr:
            extra["ni"] = max(0, n * ir // sr - draw(st.integers(0, ir // sr)))
        mode = draw(st.sampled_from(["raw", "lm"]))
        if mode == "lm":
            if draw(st.booleans()):
                extra |= {"lm": "lm16k", "lmw": "350d060a"}
            else:
                extra |= {"lm": draw(st.text(min_size=1, max_size=128)), "lmw": draw(st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True))}
            if draw(st.booleans()):
                extra["rdo"] = draw(st.one_of(st.just(2.0), st.floats(0, 1e300, allow_nan=False), st.integers(0, 1000)))
        return Header(model=model, weights=weights, sample_rate=sr, input_rate=ir, num_samples=n,
                      levels=draw(st.integers(1, 64)), bits=bits, frame_rate=fr,
                      chunk_frames=draw(st.one_of(st.just(500), st.integers(1, 1 << 24))), mode=mode, extra=extra)

    return make()


@settings(max_examples=300, deadline=None)
@given(valid_headers())
def test_v2_header_round_trip_property(h):
    data = header_v2(h)
    back, n = parse_v2(data)
    assert back == h and n == len(data) and header_v2(back) == data


def test_short_ids_are_the_shipped_models():
    """Every table entry names a shipped checkpoint (mmar.checkpoint.SHIPPED) by its config name and
    sha256[:8] (an LM run in integers: that digest's integer_identity), and each LM names the codec
    whose codes it learnt (never reassign an entry). The earlier LM in integers has no short id."""
    speech = {w for w, name in SHIPPED.items() if name.startswith("speech-")}
    assert speech == {e.weights for e in (*CODEC_IDS.values(), *LM_IDS.values())} | {integer_identity("350d060a")}
    assert (SHIPPED[CODEC_IDS[max(CODEC_IDS)].weights], SHIPPED[LM_IDS[max(LM_IDS)].weights]) == ("speech-codec-16k", "speech-lm-16k")
    for entry in (*CODEC_IDS.values(), *LM_IDS.values()):
        d = ROOT / "checkpoints" / SHIPPED[entry.weights]
        if not (d / "model.safetensors").exists():
            pytest.skip(f"{d} is not here")
        cfg = json.loads((d / "config.json").read_text())
        digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()[:8]
        assert entry.model == cfg["name"] and entry.weights in (digest, cfg.get("tokens"), integer_identity(digest))
        if cfg["kind"] == "speech_codec":
            assert (entry.sample_rate, entry.frame_rate, entry.bits) == (cfg["sample_rate"], cfg["sample_rate"] // cfg["hop"],
                                                                        int(np.log2(cfg["codebook_size"])))
        else:
            assert entry.rdo == cfg["rdo"] and cfg["codec_weights"] in {e.weights for e in CODEC_IDS.values()}


# -- overhead of files from the shipped models -----------------------------------

@pytest.mark.parametrize("seconds", [1.0, 10.0, 95.0])
@pytest.mark.parametrize("input_rate", [16000, 44100, 48000])
@pytest.mark.parametrize("lm", [False, True])
def test_overhead_is_16_bytes_plus_6_per_chunk(seconds, input_rate, lm):
    h = shipped_header(seconds, input_rate, lm)
    frames = h.frames
    if lm:  # range-coded chunks are smaller than raw ones; sizes only matter for the length field
        payloads = [bytes(4 * 60)] * -(-frames // 500)
    else:
        payloads = [bytes(packed_size(3, min(500, frames - i), 10)) for i in range(0, frames, 500)]
    data = container_bytes(h, payloads)
    overhead = len(data) - sum(map(len, payloads))
    assert overhead <= 16 + 6 * len(payloads), overhead
    if seconds == 1.0 and not lm:  # 3 levels x 10 bits x 50 frames = 188 bytes of codes
        assert sum(map(len, payloads)) == 188 and len(data) <= 212 and 8 * len(data) / 1000 <= 1.7
