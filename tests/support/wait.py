"""Wait on a condition with a timeout: the only way tests synchronise (no bare sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)  # poll step inside a wait-for-condition


async def async_wait_for(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds polling of a condition, not one awaitable
    interval: float = 0.02,
    what: str = "",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)  # poll step inside a wait-for-condition


async def async_holds(
    condition: Callable[[], object],
    duration: float,
    interval: float = 0.02,
    what: str = "",
) -> None:
    """Poll `condition` for `duration` seconds and fail the moment it is false: for what must
    NOT happen (no watchdog ping while stalled), which no wait-for-condition can show."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not condition():
            raise AssertionError(f"no longer true: {what or condition}")
        await asyncio.sleep(interval)  # poll step inside a bounded watch
    if not condition():
        raise AssertionError(f"no longer true: {what or condition}")
