"""One error tree for the whole gateway.

Third-party exceptions are translated at package boundaries into these, so the runtime can
decide what is fatal (configuration) and what is counted and retried (field data, links).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used; start-up stops with this message.

    `problems` holds one line per problem, each naming the key path, what was expected and
    what was found, so `check-config` can print them all at once.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class DecodeError(GatewayError):
    """Bytes from the field could not be turned into readings.

    Drivers subclass this (e.g. `LoRaWANDecodeError`). `cause` is a short stable token used as
    the counter label and to log each cause once, `detail` is the human-readable part.
    """

    def __init__(self, cause: str, detail: str = "", *, device: str | None = None) -> None:
        self.cause = cause
        self.detail = detail
        self.device = device
        text = f"{cause}: {detail}" if detail else cause
        if device:
            text = f"{text} (device {device})"
        super().__init__(text)


class DriverError(GatewayError):
    """A driver's transport failed (port gone, socket closed); the runtime restarts it."""


class StorageError(GatewayError):
    """The outbox database could not be written (disk full, state directory unwritable)."""


class UplinkError(GatewayError):
    """Root of uplink failures."""


class UplinkUnavailable(UplinkError):
    """The platform cannot be reached now; the batch stays queued and is retried.

    `retry_after` carries a server's Retry-After hint in seconds when it sent one.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason)


class BatchRejected(UplinkError):
    """The platform refused this batch as malformed; it goes to the dead-letter table."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)
