"""The event loop's exception handler: each cause logged once, with a count, never per turn.

asyncio's default handler logs every exception a callback raises. A callback that fails on
every loop turn (a reader whose descriptor stays readable and whose read raises: pymodbus's
serial transport once select() refused a descriptor above 1023, issue 12) then writes a
traceback per turn: 274 MB of log in 4 minutes, at 100 % CPU. Here an exception is logged the
first time its cause is seen, with its traceback; later ones only count, and a cause still
repeating is summarised at most once per `repeat_after` seconds with the count since the last
line. A cause is the exception type plus where it happened: the callback or task it left
(the first frame outside asyncio) and the line that raised it (the innermost frame).
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.metrics import PREFIX

__all__ = ["LoopErrorHandler", "LoopErrorMetrics", "install"]

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
_OTHER = "other causes (too many distinct ones to track)"


class _Cause:
    __slots__ = ("count", "logged_at", "logged_count")

    def __init__(self, now: float) -> None:
        self.count = 0
        self.logged_at = now
        self.logged_count = 0


class LoopErrorHandler:
    """Pass to `loop.set_exception_handler` (or use `install`). `counts` holds, per cause,
    how many times it happened, for the health endpoint and tests.

    `clock` is injectable so tests drive the repeat summary without waiting; `max_causes`
    bounds the memory a stream of ever-new causes could take (the rest share one bucket)."""

    def __init__(
        self,
        logger: Any = None,
        *,
        repeat_after: float = 600.0,
        max_causes: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger if logger is not None else structlog.get_logger("loop")
        self.repeat_after = repeat_after
        self.max_causes = max_causes
        self.clock = clock
        self._causes: dict[str, _Cause] = {}
        self.metrics = LoopErrorMetrics(self)

    @property
    def counts(self) -> dict[str, int]:
        return {cause: seen.count for cause, seen in list(self._causes.items())}

    @property
    def total(self) -> int:
        # a copy: a scrape reads this off the event loop's thread
        return sum(seen.count for seen in list(self._causes.values()))

    def __call__(self, loop: asyncio.AbstractEventLoop, context: Mapping[str, Any]) -> None:
        error = context.get("exception")
        message = str(context.get("message") or "unhandled exception in event loop")
        cause = describe(error, message)
        now = self.clock()
        seen = self._causes.get(cause)
        if seen is None:
            if len(self._causes) >= self.max_causes:
                cause = _OTHER
                seen = self._causes.get(cause)
            if seen is None:
                seen = self._causes[cause] = _Cause(now)
                seen.count = 1
                seen.logged_count = 1
                self.log.error(
                    "loop_exception",
                    note="an exception in the event loop; logged once per cause, then counted",
                    cause=cause,
                    loop_message=message,
                    exc_info=error if isinstance(error, BaseException) else None,
                )
                return
        seen.count += 1
        if now - seen.logged_at >= self.repeat_after:
            self.log.warning(
                "loop_exception_repeating",
                cause=cause,
                count=seen.count,
                since_last_line=seen.count - seen.logged_count,
                seconds=round(now - seen.logged_at, 1),
            )
            seen.logged_at = now
            seen.logged_count = seen.count


class LoopErrorMetrics:
    """The loop's exceptions on `/metrics`: how many, and from how many distinct causes (a cause
    string names files and lines, too long and too many for a label; the log names each once)."""

    def __init__(self, handler: LoopErrorHandler) -> None:
        self.handler = handler

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(PREFIX + "loop_exceptions", "Exceptions the event loop caught (callbacks, tasks)",
                                  value=self.handler.total)
        yield GaugeMetricFamily(PREFIX + "loop_exception_causes", "Distinct causes of those exceptions",
                                value=len(self.handler.counts))


def describe(error: object, message: str) -> str:
    """`Type at entry -> raising line` for an exception; the loop's message when there is none
    (asyncio also reports conditions such as a task destroyed while pending)."""
    if not isinstance(error, BaseException):
        return message
    kind = type(error).__qualname__
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return f"{kind}: {message}"
    innermost = frames[-1]
    entry = next((f for f in frames if not f.filename.startswith(_ASYNCIO_DIR)), innermost)
    where = _frame(innermost)
    if entry is not innermost:
        where = f"{_frame(entry)} -> {where}"
    return f"{kind} at {where}"


def _frame(frame: traceback.FrameSummary) -> str:
    parent, name = os.path.split(frame.filename)
    return f"{os.path.basename(parent)}/{name}:{frame.lineno} in {frame.name}"


def install(loop: asyncio.AbstractEventLoop, logger: Any = None) -> LoopErrorHandler:
    """Make `loop` log its exceptions once per cause; returns the handler (for its counts)."""
    handler = LoopErrorHandler(logger)
    loop.set_exception_handler(handler)
    return handler
