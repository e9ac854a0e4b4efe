"""`edge-gateway-sim serial`: the simulator as ops run it, in its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import serial

from drivers.serial import wxt
from tests.support.wait import wait_for

# slow: the simulator as a real process (make test-fast leaves it out)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]


def test_wxt_simulator_cli_speaks_on_its_link(tmp_path: Path) -> None:
    link = tmp_path / "ttyWXT"
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "serial", "wxt", "--link", str(link),
         "--mode", "automatic", "--period", "0.1", "--duration", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(link.exists, timeout=10, what="the simulator's link")
        with serial.Serial(str(link), 19200, timeout=2) as port:
            port.reset_input_buffer()
            port.readline()  # may start mid-message
            line = port.readline()
        message = wxt.decode_line(line, "ttyWXT", 0.0)
        assert message.address == "0" and len(message.readings) == 15  # every field the station sends
        out, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "sent" in out.splitlines()[-1]


def test_cli_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulators.cli", "serial", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "--unplug-every" in out and "--corrupt" in out
