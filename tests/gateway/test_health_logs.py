"""Logs: one JSON object per line for the gateway and the libraries alike, with the journald
priority prefix when stderr is the journal."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.logs import configure_logging, stream_is_journal


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def emit_all() -> None:
    structlog.get_logger("runtime").warning("uplink_disconnected", uplink="mqtt")
    structlog.get_logger("runtime").info("gateway_started")
    structlog.get_logger("runtime").debug("not shown")
    logging.getLogger("paho.mqtt.client").error("Connection refused: %s", "not authorised")
    logging.getLogger("websockets.server").info("below warning: not shown")
    logging.getLogger("pymodbus.logging").error("frame dump: not shown")


def test_everything_is_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", out, journal=False)
    emit_all()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["event"], d["level"]) for d in lines] == [
        ("uplink_disconnected", "warning"),
        ("gateway_started", "info"),
        ("Connection refused: not authorised", "error"),
    ]
    assert lines[2]["logger"] == "paho.mqtt.client" and lines[0]["uplink"] == "mqtt"
    assert all("timestamp" in d for d in lines)


def test_journal_gets_sd_daemon_priorities() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", out, journal=True)
    emit_all()
    prefixes = [line[:3] for line in out.getvalue().splitlines()]
    assert prefixes == ["<4>", "<6>", "<7>", "<3>"]
    assert json.loads(out.getvalue().splitlines()[3][3:])["logger"] == "paho.mqtt.client"


def test_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stream_is_journal(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not stream_is_journal(stream)
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not stream_is_journal(io.StringIO())
