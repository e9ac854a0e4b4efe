"""Every log line of the gateway and its drivers has a stable snake_case event key: read off
the JSON a running gateway writes, and off every logging call in gateway/ and drivers/ (the
lines a test run cannot provoke: a disk refusing writes, a BlueZ adapter power-cycled)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.logs import configure_logging
from tests.gateway.test_status_page import READINGS, make_gateway, started
from tests.support.log_events import events_of, logger_calls_without_a_key, not_snake_case

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The gateway's log as JSON lines in memory, at debug level; logging restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("debug", "json", out, journal=False)
    yield out
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def test_a_running_gateway_logs_snake_case_events(tmp_path: Path, json_log: io.StringIO) -> None:
    # a replay driver with a line that does not decode, and one whose file is missing (it fails
    # and waits to restart), forwarding through the file uplink
    gateway, _ = make_gateway(tmp_path, broken_driver=True)
    task = await started(gateway, READINGS)
    gateway.request_stop()
    await asyncio.wait_for(task, timeout=20)
    events = events_of(json_log.getvalue().splitlines())
    assert not_snake_case(events) == []
    # the lines this run must have written: the check above read real ones
    assert {"gateway_started", "decode_error", "replay_finished", "driver_restarting",
            "gateway_stopped"} <= set(events), events
    assert events.count("decode_error") == 1  # one bad line: logged once per cause


def test_every_logging_call_in_gateway_and_drivers_names_a_snake_case_event() -> None:
    assert logger_calls_without_a_key([ROOT / "gateway", ROOT / "drivers"]) == []


def test_the_checks_catch_a_sentence(tmp_path: Path) -> None:
    assert not_snake_case(["uplink_connected", "gateway started", "Decode_error", "bad__key"]) == [
        "Decode_error", "bad__key", "gateway started"]
    (tmp_path / "driver.py").write_text(
        'def run(ctx, ok):\n'
        '    ctx.log.info("port_opened", port=1)\n'
        '    ctx.log.warning("serial port unavailable; reopening", port=1)\n'
        '    ctx.log.info("config_reloaded" if ok else "config reloaded: nothing changed")\n'
        '    ctx.log.debug(message)\n'
        '    log.error(f"remote config {ok}")\n')
    lines = [line.split(": ", 1)[0] for line in logger_calls_without_a_key([tmp_path])]
    assert lines == [f"{tmp_path / 'driver.py'}:{n}" for n in (3, 4, 5, 6)]
    assert events_of(['{"event": "gateway_started"}', '<4>{"event": "Connection refused", "logger": "paho"}',
                      '<6>{"event": "uplink_connected"}']) == ["gateway_started", "uplink_connected"]
