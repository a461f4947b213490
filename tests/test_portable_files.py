"""A file LM-coded in integers (tests/data/portable, made by its make.py on the machine that
wrote it) decodes to the same codes on every machine, and coding those codes again gives its
payload byte for byte: the entropy model's probabilities are the same integers everywhere
(mmar.integer_transformer). Compare test_v1_files.py, whose float-coded file decodes only on
CPUs with the same kernels."""

from pathlib import Path

import numpy as np
import pytest

from mmar.coding.container import ContainerReader
from mmar.coding.lm_coding import LMEncoder, lm_decode
from mmar.integer_transformer import integer_identity
from mmar.tasks.codec import decode_array, models_for

HERE = Path(__file__).parent / "data" / "portable"


@pytest.fixture(scope="module")
def shipped():
    data = (HERE / "lm_integers.mmc").read_bytes()
    codec, lm = models_for(ContainerReader(data).header)
    return codec, lm, data


def test_the_file_names_the_shipped_lm_in_integers(shipped):
    _, lm, data = shipped
    assert ContainerReader(data).header.extra["lmw"] == integer_identity(lm.weights) == lm.coded_weights


def test_decodes_to_the_stored_codes_on_every_machine(shipped):
    codec, lm, data = shipped
    r = ContainerReader(data)
    frames = -(-r.header.num_samples // codec.model.hop)
    codes = np.concatenate(list(lm_decode(lm.coder(), r, frames, r.header.chunk_frames, lm.window)), axis=1)
    assert np.array_equal(codes, np.load(HERE / "lm_integers_codes.npy").astype(np.int64))


def test_coding_the_stored_codes_gives_the_payload(shipped):
    _, lm, data = shipped
    codes = np.load(HERE / "lm_integers_codes.npy").astype(np.int64)
    enc = LMEncoder(lm.coder(), 10**6, lm.window)
    assert enc.push(codes) + enc.flush() == list(ContainerReader(data))


def test_cli_decodes_it(shipped, tmp_path):
    from mmar.cli import main

    codec, lm, data = shipped
    (tmp_path / "a.mmc").write_bytes(data)
    assert main(["codec", "decode", str(tmp_path / "a.mmc"), "-o", str(tmp_path / "a.wav"), "-q"]) == 0
    audio, rate = decode_array(codec, data, lm=lm)
    assert rate == 16000 and len(audio) == ContainerReader(data).header.num_samples
