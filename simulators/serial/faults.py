"""Fault injection shared by the serial simulators: what goes wrong on a real line."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Faults"]


@dataclass
class Faults:
    """Probabilities per answer (0..1) and switches; change them while the simulator runs."""

    corrupt: float = 0.0  # flip a byte inside the checksum-protected part (bad CRC/checksum)
    garbage: float = 0.0  # send noise bytes before the answer
    drop: float = 0.0  # answer nothing this time
    silent: bool = False  # answer nothing at all (device dead or disconnected from the bus)
    seed: int = 1
    rng: random.Random = field(init=False, repr=False)
    # counters: what was injected, for loss accounting in tests
    corrupted: int = 0
    garbled: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def apply(self, frame: bytes, corrupt_at: int = 2) -> bytes:
        """The bytes that really go out for `frame` (b"" when nothing is sent)."""
        if self.silent:
            self.dropped += 1
            return b""
        if self.drop and self.rng.random() < self.drop:
            self.dropped += 1
            return b""
        out = frame
        if self.corrupt and self.rng.random() < self.corrupt and len(frame) > corrupt_at:
            damaged = bytearray(frame)
            damaged[corrupt_at] ^= 0x5A
            out = bytes(damaged)
            self.corrupted += 1
        if self.garbage and self.rng.random() < self.garbage:
            noise = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 12)))
            out = noise + out
            self.garbled += 1
        return out
