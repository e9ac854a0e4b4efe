"""The contract between the runtime and an uplink.

An uplink only turns a batch into an acknowledged write. The runtime's `UplinkRunner`
(gateway/uplinks/runner.py) owns the rest: reading the uplink's cursor in the outbox, the number
of batches in flight, priority events ahead of the backlog, the drain rate, reconnect backoff with
jitter, acknowledgements and dead letters.

`send()` returns once the platform acknowledged the batch (MQTT PUBACK, HTTP 2xx). It raises
`UplinkUnavailable` when the platform cannot take it now (the batch is retried after backoff, or
after `retry_after`), and `BatchRejected` when the platform refused it as malformed (the batch
moves to the dead-letter table and the queue goes on). Any other exception is treated as
`UplinkUnavailable` and logged with its type. After any failure the runner waits (backoff with
jitter, or `retry_after`) and calls `start()` again before sending resumes, so `start()` must be
idempotent: reconnect if needed, return at once if already connected.

An uplink module `gateway/uplinks/<type>.py` exposes `Config` (subclassing `UplinkSettings`) and
`load_uplink()` returning the Uplink subclass, so heavy client libraries load only when used.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import structlog

from gateway.batch import Batch

__all__ = ["Uplink", "UplinkContext", "UplinkSettings"]


class UplinkSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Keys every `[[uplinks]]` table has. Uplink configs subclass this."""

    type: str
    # Unique per gateway; defaults to the type. Names the uplink's outbox cursor: renaming an
    # uplink starts its cursor afresh at the oldest batch still stored.
    name: str = ""
    # Batches sent but not yet acknowledged, at most.
    max_in_flight: int = 8
    # Upper bound on batches per second while draining a backlog; 0 means unbounded.
    max_batches_per_second: float = 0.0


ConfigT = TypeVar("ConfigT", bound=UplinkSettings)


class UplinkContext:
    def __init__(
        self, name: str, *, gateway_id: str, state_dir: str, logger: Any | None = None
    ) -> None:
        self.name = name
        self.gateway_id = gateway_id
        self.state_dir = state_dir
        self.log = logger if logger is not None else structlog.get_logger("uplink").bind(uplink=name)
        self.counters: dict[str, int] = {}
        self.connected = False

    def count(self, counter: str, n: int = 1) -> None:
        """An uplink-specific counter, exported as `uplink_events_total{uplink,counter}`."""
        self.counters[counter] = self.counters.get(counter, 0) + n


class Uplink(abc.ABC, Generic[ConfigT]):
    type_name: ClassVar[str] = ""

    def __init__(self, config: ConfigT, ctx: UplinkContext) -> None:
        self.config = config
        self.ctx = ctx

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections. May raise `UplinkUnavailable`; the runner retries with backoff."""

    @abc.abstractmethod
    async def send(self, batch: Batch) -> None:
        """Deliver one batch and return once the platform acknowledged it."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close connections (MQTT publishes its offline status first)."""
