"""Exponential backoff with full jitter, shared by driver restarts and uplink reconnects.

Pure: it computes delays and never sleeps, so tests drive it without time passing. Full jitter
(a uniform draw below the exponential ceiling) keeps a street of gateways that lost the same LTE
cell from reconnecting in lockstep.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(
        self, initial: float, maximum: float, *, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.maximum, self.initial * self.factor**self.attempts)

    def next_delay(self) -> float:
        """Delay before the next attempt: between half the ceiling and the ceiling."""
        ceiling = self.ceiling()
        self.attempts += 1
        return ceiling / 2 + self._rng.random() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
