"""socketcand (LiBal BMS on CAN): elements to assemble hostile command streams."""

from __future__ import annotations

import random

ELEMENTS = [b"< open can0 >", b"< open can9 >", b"< rawmode >", b"< bcmmode >", b"< echo >",
            b"< send 3C8 2 01 02 >", b"< send 3C8 9 01 >", b"< send FFFFFFFFF 1 00 >",
            b"< send 356 1 FF >", b"< add 1 0 123 1 00 >", b"< frame 123 1.0 00 >", b"<", b">",
            b"< <", b"<" + b"x" * 300 + b">", b"\xff\xfe", b"< >", b"  ", b"< hi >"]


def stream(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return rng.randbytes(rng.randint(0, 200))
    return b"".join(rng.choice(ELEMENTS) for _ in range(rng.randint(0, 20)))
