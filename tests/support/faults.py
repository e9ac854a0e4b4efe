"""A fault schedule with a known total: the simulators' seeded faults, stopped after a count.

A seeded chance per frame makes which frames are damaged reproducible, but not how many of
them fall inside the stretch the driver reads (the test stops on time or on a reading count).
Capped, the total is known before the run and the gateway's counter must equal it.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulators.serial import Faults


@dataclass
class CappedFaults(Faults):
    """`Faults` whose corruption stops for good once `max_corrupted` frames were corrupted."""

    max_corrupted: int = 0

    def apply(self, frame: bytes, corrupt_at: int = 2) -> bytes:
        out = super().apply(frame, corrupt_at)
        if self.corrupted >= self.max_corrupted:
            self.corrupt = 0.0
        return out
