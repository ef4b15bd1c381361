"""What the fuzz tests share: how many cases they run, and how they change bytes.

The tests run a few hundred cases each in the everyday suite (a second or two); the sanitizer
run (``scripts/sanitize.sh``) asks for many more through ``LMGC_FUZZ_CASES``, with the C kernels
built under AddressSanitizer and UndefinedBehaviorSanitizer, where a read or write out of bounds
that lands in no canary still stops the run."""

from __future__ import annotations

import os
import random

FUZZ_CASES_VARIABLE = "LMGC_FUZZ_CASES"


def fuzz_cases(default: int) -> int:
    """How many cases a fuzz test runs: ``LMGC_FUZZ_CASES`` where set, else ``default``."""
    return int(os.environ.get(FUZZ_CASES_VARIABLE, default))


def mutate(data: bytes, rng: random.Random, donors: list[bytes] = ()) -> bytes:
    """``data`` with one to eight random edits, as damage and hostile writers make them: bit
    flips, replaced bytes, deleted and inserted runs, and a tail spliced from one of ``donors``
    (other real blocks: their tables and varints are well formed, unlike noise)."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.random()
        if op < 0.5 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op < 0.7 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op < 0.8 and out:
            at = rng.randrange(len(out))
            del out[at : at + rng.randrange(1, 16)]
        elif op < 0.9 or not donors:
            at = rng.randrange(len(out) + 1)
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        else:
            donor = rng.choice(donors)
            at, start = rng.randrange(len(out) + 1), rng.randrange(len(donor) + 1)
            out[at:] = donor[start : start + rng.randrange(1, 64)]
    return bytes(out)
