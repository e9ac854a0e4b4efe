"""Whether a device answers: consecutive misses, the offline mark and the probe backoff.

Pure bookkeeping (no clock, no I/O): the driver reports successes and misses with their time,
and gets back the status change to emit, if any. The backoff is the gateway's shared one
(gateway.backoff); see `probe_delay` for why probes use its ceiling without jitter.
"""

from __future__ import annotations

from gateway.backoff import Backoff
from gateway.model import Event, Severity

__all__ = ["DeviceHealth"]


class DeviceHealth:
    __slots__ = ("device", "offline_after", "misses", "online", "backoff", "known")

    def __init__(
        self, device: str, *, offline_after: int, backoff_initial: float, backoff_max: float
    ) -> None:
        self.device = device
        self.offline_after = offline_after
        self.misses = 0
        self.online = True
        self.known = False  # no answer seen yet
        self.backoff = Backoff(backoff_initial, backoff_max)

    def success(self, ts: float) -> Event | None:
        """An answer arrived; an event when the device comes back from offline."""
        self.misses = 0
        self.known = True
        self.backoff.reset()
        if self.online:
            return None
        self.online = True
        return Event(
            device=self.device,
            ts=ts,
            name="sensor_status",
            severity=Severity.INFO,
            metric="sensor_status",
            value="ok",
        )

    def miss(self, ts: float, reason: str) -> Event | None:
        """A poll went unanswered; an event when this miss makes the device offline."""
        self.misses += 1
        if not self.online or self.misses < self.offline_after:
            return None
        self.online = False
        return Event(
            device=self.device,
            ts=ts,
            name="sensor_status",
            severity=Severity.WARNING,
            metric="sensor_status",
            value="offline",
            detail={"misses": str(self.misses), "reason": reason},
        )

    def port_lost(self, ts: float, reason: str) -> Event | None:
        """The whole port went away: every device on it is offline at once."""
        self.misses = max(self.misses, self.offline_after)
        if not self.online:
            return None
        self.online = False
        return Event(
            device=self.device,
            ts=ts,
            name="sensor_status",
            severity=Severity.WARNING,
            metric="sensor_status",
            value="offline",
            detail={"reason": reason},
        )

    def probe_delay(self) -> float:
        """Seconds until an offline device is polled again (doubling each time).

        The backoff's ceiling, without its jitter: `offline_backoff_max` is a bus-time budget
        (an offline device costs one timeout per that many seconds at most, so the devices that
        answer keep their intervals), which a delay drawn below the ceiling would break. One
        probing gateway per bus means no herd for jitter to spread."""
        delay = self.backoff.ceiling()
        self.backoff.attempts += 1
        return delay
