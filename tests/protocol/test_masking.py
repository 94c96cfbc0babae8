"""RFC 6455 section 5.3 (client-to-server masking): hub.protocol.masking.apply_mask."""

from __future__ import annotations

import random

import pytest

from hub.protocol.masking import STRIDED_THRESHOLD, apply_mask

MASKS = [
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x37\xfa\x21\x3d",  # the key of the RFC 6455 section 5.7 examples
    b"\x01\x02\x04\x80",
    b"\x80\x00\x00\x01",
]

# Around the switch between the integer path and the strided path, and up to ~3000.
SIZES = sorted(
    {*range(0, 18)}
    | {*range(STRIDED_THRESHOLD - 6, STRIDED_THRESHOLD + 7)}
    | {125, 126, 127, 255, 256, 257, 511, 512, 513, 1500, 2047, 2048, 2049, 2999, 3000, 3001}
)


def naive_mask(data: bytes, mask: bytes) -> bytes:
    """Section 5.3 literally: octet i is XOR-ed with octet i MOD 4 of the masking key."""
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 100_003 + size).randbytes(size)


class TestSection5_3Masking:
    def test_rfc_example(self) -> None:
        # Section 5.7: "Hello" masked with 37 fa 21 3d.
        assert apply_mask(b"Hello", b"\x37\xfa\x21\x3d") == b"\x7f\x9f\x4d\x51\x58"

    def test_threshold_is_inside_tested_sizes(self) -> None:
        assert STRIDED_THRESHOLD - 1 in SIZES
        assert STRIDED_THRESHOLD in SIZES
        assert max(SIZES) >= 3000

    @pytest.mark.parametrize("size", SIZES)
    def test_matches_naive_reference(self, size: int) -> None:
        data = payload(size)
        for mask in MASKS:
            assert apply_mask(data, mask) == naive_mask(data, mask)

    @pytest.mark.parametrize("size", [4096, 65536])
    def test_matches_naive_reference_large(self, size: int) -> None:
        data = payload(size)
        for mask in MASKS:
            assert apply_mask(data, mask) == naive_mask(data, mask)

    @pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1023, 1024, 1025, 4096, 65536])
    def test_round_trip(self, size: int) -> None:
        data = payload(size, seed=1)
        for mask in MASKS:
            masked = apply_mask(data, mask)
            assert len(masked) == size
            assert apply_mask(masked, mask) == data

    def test_any_mask(self) -> None:
        rng = random.Random(53)
        for _ in range(200):
            mask = rng.randbytes(4)
            size = rng.choice([rng.randrange(0, 64), rng.randrange(900, 3100)])
            data = rng.randbytes(size)
            assert apply_mask(data, mask) == naive_mask(data, mask)

    def test_zero_mask_is_identity(self) -> None:
        data = payload(2000, seed=2)
        assert apply_mask(data, b"\x00\x00\x00\x00") == data
        assert apply_mask(data[:100], b"\x00\x00\x00\x00") == data[:100]

    @pytest.mark.parametrize("size", [0, 7, 1023, 1024, 3000])
    def test_accepts_bytearray_and_memoryview(self, size: int) -> None:
        data = payload(size, seed=3)
        mask = b"\xde\xad\xbe\xef"
        expected = naive_mask(data, mask)
        assert apply_mask(bytearray(data), mask) == expected
        assert apply_mask(memoryview(data), mask) == expected

    @pytest.mark.parametrize("size", [0, 10, 1024, 3000])
    def test_returns_bytes_and_leaves_input_alone(self, size: int) -> None:
        data = bytearray(payload(size, seed=4))
        original = bytes(data)
        result = apply_mask(data, b"\x11\x22\x33\x44")
        assert type(result) is bytes
        assert data == original

    def test_leading_zero_bytes_kept(self) -> None:
        # The integer path must not drop leading zero bytes of the result.
        mask = b"\xab\xcd\xef\x01"
        data = mask * 3 + b"\x00"
        assert apply_mask(data, mask) == b"\x00" * 12 + b"\xab"
