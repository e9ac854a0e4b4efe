"""Exponential backoff with equal jitter, shared by driver restarts and uplink reconnects.

Pure: it computes delays and never sleeps, so tests drive it without time passing. Equal jitter
(half the exponential ceiling, plus a uniform draw over the other half) keeps a street of
gateways that lost the same LTE cell from reconnecting in lockstep, and unlike full jitter (a draw
over the whole ceiling) never retries a failing USB adapter or broker at once: each attempt waits
at least half its ceiling.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]

# One generator for every Backoff that is not handed its own (tests pass a seeded one): a
# random.Random holds 2.5 KiB of Mersenne Twister state, and a city gateway makes about 80.
_SHARED_RNG = random.Random()


class Backoff:
    def __init__(
        self, initial: float, maximum: float, *, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0
        self._rng = rng or _SHARED_RNG

    def ceiling(self) -> float:
        return min(self.maximum, self.initial * self.factor**self.attempts)

    def next_delay(self) -> float:
        """Delay before the next attempt: between half the ceiling and the ceiling."""
        ceiling = self.ceiling()
        self.attempts += 1
        return ceiling / 2 + self._rng.random() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
