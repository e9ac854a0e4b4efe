"""The loop's exception handler logs a cause once and counts it, however often it repeats."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from typing import Any

import pytest
import structlog

from gateway.loop_errors import LoopErrorHandler, install

pytestmark = pytest.mark.timeout(60)

TURNS = 10_000


class Lines:
    """A logger that keeps (level, message, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def error(self, message: str, **fields: Any) -> None:
        self.lines.append(("error", message, fields))

    def warning(self, message: str, **fields: Any) -> None:
        self.lines.append(("warning", message, fields))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def raise_on_every_turn(turns: int) -> None:
    """A reader whose descriptor stays readable and whose callback raises: the shape of the
    pymodbus failure in issue 12. It raises once per loop turn, `turns` times."""
    loop = asyncio.get_running_loop()
    here, there = socket.socketpair()
    there.send(b"x")  # never read: the descriptor stays readable on every turn
    done = loop.create_future()
    calls = 0

    def on_readable() -> None:
        nonlocal calls
        calls += 1
        if calls == turns:
            loop.remove_reader(here.fileno())
            done.set_result(None)
        raise ValueError("filedescriptor out of range in select()")

    loop.add_reader(here.fileno(), on_readable)
    try:
        await asyncio.wait_for(done, 30)
    finally:
        loop.remove_reader(here.fileno())
        here.close()
        there.close()


async def test_ten_thousand_raises_give_one_line_and_the_count() -> None:
    lines = Lines()
    clock = FakeClock()
    handler = LoopErrorHandler(lines, clock=clock)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    try:
        await raise_on_every_turn(TURNS)
    finally:
        loop.set_exception_handler(previous)
    assert len(lines.lines) == 1
    level, message, fields = lines.lines[0]
    assert (level, message) == ("error", "loop_exception") and "once per cause" in fields["note"]
    assert isinstance(fields["exc_info"], ValueError)
    cause = fields["cause"]
    assert cause.startswith("ValueError at ")
    assert "in on_readable" in cause  # where: the callback that raised
    assert handler.counts == {cause: TURNS}
    assert handler.total == TURNS
    # on /metrics: the handler's own collector
    exported = {family.name: family.samples[0].value for family in handler.metrics.collect()}
    assert exported == {"edge_gateway_loop_exceptions": TURNS, "edge_gateway_loop_exception_causes": 1}


async def test_a_cause_still_repeating_is_summarised_once_per_period() -> None:
    lines = Lines()
    clock = FakeClock()
    handler = LoopErrorHandler(lines, clock=clock, repeat_after=600)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    try:
        await raise_on_every_turn(100)
        clock.now += 599.0
        await raise_on_every_turn(100)
        assert len(lines.lines) == 1
        clock.now += 1.0
        await raise_on_every_turn(100)
    finally:
        loop.set_exception_handler(previous)
    assert [level for level, _, _ in lines.lines] == ["error", "warning"]
    summary = lines.lines[1][2]
    # the summary fires on the first repeat once 600 s have passed: the 201st exception
    assert summary["count"] == 201 and summary["since_last_line"] == 200
    assert summary["seconds"] == 600.0
    assert handler.total == 300


async def test_different_places_are_different_causes() -> None:
    lines = Lines()
    handler = LoopErrorHandler(lines)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    finished = loop.create_future()

    def first() -> None:
        raise KeyError("a")

    def second() -> None:
        raise KeyError("a")

    try:
        for _ in range(50):
            loop.call_soon(first)
            loop.call_soon(second)
        loop.call_soon(finished.set_result, None)
        await finished
        # a context without an exception (asyncio reports some conditions that way)
        for _ in range(3):
            loop.call_exception_handler({"message": "Task was destroyed but it is pending!"})
    finally:
        loop.set_exception_handler(previous)
    counts = handler.counts
    assert sorted(counts.values()) == [3, 50, 50]
    assert counts["Task was destroyed but it is pending!"] == 3
    assert len(lines.lines) == 3
    assert {c.rsplit(" in ", 1)[1] for c in counts if c.startswith("KeyError")} == {
        "first",
        "second",
    }


async def test_distinct_causes_are_bounded() -> None:
    lines = Lines()
    handler = LoopErrorHandler(lines, max_causes=2)
    for n in range(5):
        handler(asyncio.get_running_loop(), {"message": f"condition {n}"})
    assert handler.counts == {
        "condition 0": 1,
        "condition 1": 1,
        "other causes (too many distinct ones to track)": 3,
    }
    assert len(lines.lines) == 3


async def test_install_and_structlog_rendering_with_traceback() -> None:
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    )
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    handler = install(loop, logger)
    try:
        assert loop.get_exception_handler() is handler
        await raise_on_every_turn(20)
    finally:
        loop.set_exception_handler(previous)
    rendered = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rendered) == 1
    assert "Traceback" in rendered[0]["exception"]
    assert "filedescriptor out of range" in rendered[0]["exception"]
    assert handler.total == 20
