"""Raw bit packing of codes: exact round trips, the documented layout, bounded work."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmar.coding.bitpack import pack_codes, packed_size, unpack_codes
from mmar.errors import ContainerError


# -- bit packing -------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.integers(0, 12), st.integers(0, 40), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(levels, frames, bits, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, size=(levels, frames))
    data = pack_codes(codes, bits)
    assert len(data) == packed_size(levels, frames, bits) == (levels * frames * bits + 7) // 8
    back = unpack_codes(data, levels, frames, bits)
    assert back.dtype == np.int64 and back.shape == (levels, frames)
    np.testing.assert_array_equal(back, codes)


def test_pack_layout_is_frame_major_lsb_first():
    codes = np.array([[1, 2], [3, 0]])  # K=2, T=2; order c[0,0] c[1,0] c[0,1] c[1,1]
    assert pack_codes(codes, 2) == bytes([0b00_10_11_01])
    assert pack_codes(np.array([[5]]), 3) == bytes([0b101])


def test_pack_errors():
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(np.array([[0, 1024]]), 10)
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(np.array([[-1]]), 10)
    with pytest.raises(ValueError):
        pack_codes(np.zeros(5, dtype=int), 10)
    with pytest.raises(ValueError):
        pack_codes(np.zeros((2, 2)), 10)  # floats
    data = pack_codes(np.ones((4, 10), dtype=int), 10)
    with pytest.raises(ContainerError, match="truncated"):
        unpack_codes(data[:-1], 4, 10, 10)
    with pytest.raises(ContainerError, match="extra"):
        unpack_codes(data + b"\0", 4, 10, 10)


def _python_calls(fn) -> int:
    """Python and C function calls made while running ``fn`` (a deterministic measure of work)."""
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_packing_work_does_not_grow_with_the_codes():
    """Whole-array numpy operations per bit plane: one hour (2.16 M codes) makes as many Python-level
    calls as 40 codes, so no per-code Python loop can slip in."""
    small = np.random.default_rng(0).integers(0, 1024, size=(4, 10))
    hour = np.random.default_rng(0).integers(0, 1024, size=(12, 180_000))
    for codes in (small, hour):  # warm up lazy imports
        unpack_codes(pack_codes(codes, 10), *codes.shape, 10)
    calls = [_python_calls(lambda c=c: unpack_codes(pack_codes(c, 10), *c.shape, 10)) for c in (small, hour)]
    assert calls[0] == calls[1] < 400
    np.testing.assert_array_equal(unpack_codes(pack_codes(hour, 10), 12, 180_000, 10), hour)
