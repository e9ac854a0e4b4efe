"""The uplink runner logs a failure once per reason, and at most LOG_ONCE_MAX reasons: a reason
can carry a server's error text (a request id) that differs on every attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.backoff import Backoff
from gateway.errors import UplinkUnavailable
from gateway.logs import LOG_ONCE_MAX
from gateway.uplinks.base import UplinkContext
from gateway.uplinks.file import Config
from gateway.uplinks.file.uplink import FileUplink
from gateway.uplinks.runner import UplinkRunner


class Lines:
    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.events.append(event)

    def bind(self, **_: Any) -> Lines:
        return self


async def _no_outbox(*args: Any) -> Any:
    raise AssertionError("nothing is sent here")


async def test_failures_are_logged_once_per_reason_up_to_the_bound(tmp_path: Path) -> None:
    log = Lines()
    ctx = UplinkContext("file", gateway_id="gw", state_dir=str(tmp_path), logger=log)
    runner = UplinkRunner(FileUplink(Config(type="file"), ctx), ctx, _no_outbox, backoff=Backoff(0.0, 0.0))
    for attempt in range(3 * LOG_ONCE_MAX):
        # the same reason twice, then a new one (a request id in the server's answer)
        await runner._after_failure(UplinkUnavailable(f"HTTP 503, request id {attempt // 2}"))
    assert log.events.count("uplink_unavailable") == LOG_ONCE_MAX
    assert runner.failures == 3 * LOG_ONCE_MAX
    assert runner.last_error == f"HTTP 503, request id {(3 * LOG_ONCE_MAX - 1) // 2}"
