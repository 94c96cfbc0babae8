"""Masking throughput: hub's pure-Python apply_mask against the websockets C extension and a
plain per-byte Python loop, in the same run (ratios matter; absolute numbers are machine noise).

    .venv/bin/python benchmarks/masking.py
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable

from hub.protocol.masking import apply_mask

Masker = Callable[[bytes, bytes], bytes]


def per_byte(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i & 3] for i, b in enumerate(data))


def peers() -> dict[str, Masker]:
    maskers: dict[str, Masker] = {"hub": apply_mask}
    try:
        from websockets.speedups import apply_mask as websockets_c
    except ImportError:
        pass
    else:
        maskers["websockets (C)"] = websockets_c
    maskers["per-byte loop"] = per_byte
    return maskers


def measure(masker: Masker, data: bytes, mask: bytes) -> float:
    """Best-of-5 seconds per call, with enough calls per repeat to last ~20 ms."""
    number = max(1, 2**20 // max(len(data), 1) // 8)
    if masker is per_byte:
        number = max(1, number // 50)
    return min(timeit.repeat(lambda: masker(data, mask), number=number, repeat=5)) / number


def main() -> None:
    mask = os.urandom(4)
    maskers = peers()
    print(f"{'size':>10}  " + "  ".join(f"{name:>18}" for name in maskers) + "  hub/C time ratio")
    for size in (32, 125, 1024, 4096, 65536, 1 << 20, 16 << 20):
        data = os.urandom(size)
        expected = per_byte(data, mask) if size <= 65536 else apply_mask(data, mask)
        times = {}
        for name, masker in maskers.items():
            if masker is per_byte and size > 65536:
                continue
            assert masker(data, mask) == expected, name
            times[name] = measure(masker, data, mask)
        cells = [
            f"{size / times[name] / 1e6:>12.0f} MB/s" if name in times else f"{'-':>18}"
            for name in maskers
        ]
        ratio = times["hub"] / times.get("websockets (C)", float("nan"))
        print(f"{size:>10}  " + "  ".join(cells) + f"  {ratio:>8.1f}x")


if __name__ == "__main__":
    main()
