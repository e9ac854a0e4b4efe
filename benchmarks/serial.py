"""Modbus polls per second one bus sustains over a pty pair, against a bare pyserial
request/response loop over the same pty in the same run.

Peer: the Modbus RTU simulator (`edge-gateway-sim serial modbus`, a pymodbus 3.16 server
behind a pty relay) in its own process, one XY-MD02 unit. Subject: the serial driver (pymodbus
asyncio client, scheduling, decoding, sensor_status readings into a list), one device polled
with interval ~0 so the bus is never idle. Baseline: a plain loop that writes the same read
request with pyserial and reads the 9-byte answer, checking its CRC. Both are one request at a
time, so the ratio is the driver's cost per request relative to the bare exchange.

    .venv/bin/python -m benchmarks.serial [--polls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import serial

from benchmarks.report import Measurement, print_ratio
from drivers.serial import Config
from drivers.serial.driver import SerialDriver
from drivers.serial.modbus_codec import build_read_request, parse_read_response
from gateway.driver import DriverContext
from gateway.model import Reading


def _start_peer(link: Path, seconds: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "serial", "modbus", "--link", str(link),
         "--units", "1", "--duration", str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not link.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("the Modbus simulator did not start")
        time.sleep(0.05)  # waiting for the peer process to create its link
    return process


def bare_loop(path: str, polls: int) -> Measurement:
    request = build_read_request(1, 4, 1, 2)
    with serial.Serial(path, 9600, timeout=1.0) as port:
        for _ in range(20):  # warm-up
            port.write(request)
            parse_read_response(port.read(9), 1, 4, 2)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(polls):
            port.write(request)
            parse_read_response(port.read(9), 1, 4, 2)
        return Measurement("bare pyserial loop", polls, time.perf_counter() - wall0,
                           time.process_time() - cpu0)


async def _driver_polls(path: str, polls: int) -> Measurement:
    done = 0
    target = 20  # warm-up polls first
    reached = asyncio.Event()

    def submit(reading: Reading) -> None:
        nonlocal done
        if reading.metric == "sensor_status":  # one per answered poll
            done += 1
            if done >= target:
                reached.set()

    ctx = DriverContext(
        "bench",
        gateway_id="bench",
        state_dir=Path(tempfile.gettempdir()),
        submit=submit,
        submit_event=lambda event: None,
    )
    config = msgspec.convert(
        {
            "type": "serial",
            "name": "bench",
            "port": path,
            "protocol": "modbus",
            "modbus": {"timeout": 1.0, "retries": 0,
                       "devices": [{"unit": 1, "interval": 1e-6, "map": "xy_md02"}]},
        },
        Config,
    )
    driver = SerialDriver(config, ctx)
    task = asyncio.create_task(driver.run())
    try:
        await asyncio.wait_for(reached.wait(), 30)
        first = done
        target = first + polls
        reached.clear()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.wait_for(reached.wait(), 120)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        measured = done - first
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if ctx.decode_errors or ctx.counters.get("misses"):
        print(f"  warning: decode errors {ctx.decode_errors}, counters {ctx.counters}")
    return Measurement("serial driver (pymodbus)", measured, wall, cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serial")
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "ttyBENCH"
        peer = _start_peer(link, seconds=55)
        try:
            subject: list[Measurement] = []
            baseline: list[Measurement] = []
            for _ in range(args.rounds):  # interleaved, so drift hits both alike
                baseline.append(bare_loop(str(link), args.polls))
                subject.append(asyncio.run(_driver_polls(str(link), args.polls)))
        finally:
            peer.terminate()
            peer.wait(10)
    best_subject = min(subject, key=lambda m: m.wall_seconds / m.count)
    best_baseline = min(baseline, key=lambda m: m.wall_seconds / m.count)
    print_ratio("Modbus RTU polls/s on one bus over a pty pair (pymodbus server peer)",
                best_subject, best_baseline, "polls/s")
    per_poll = [1e6 * m.cpu_seconds / m.count for m in (best_subject, best_baseline)]
    print(f"  CPU per poll in this process: driver {per_poll[0]:.0f} us, bare loop "
          f"{per_poll[1]:.0f} us (ratio {per_poll[0] / per_poll[1]:.2f}); the peer process"
          " (pymodbus server + pty relay) sets the wall-clock pace of both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
