"""The health listener: /metrics, /healthz, /status.json, the status page (in a real headless
chromium, at a phone's width), 404 elsewhere; and `edge-gateway status` against it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as cli_main
from gateway.config import parse_config
from gateway.runtime import Gateway
from tests.support.ports import free_port
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(120)

READINGS = 7


def make_gateway(tmp_path: Path, *, broken_driver: bool = False) -> tuple[Gateway, str]:
    now = time.time()
    data = tmp_path / "day.jsonl"
    data.write_text("".join(
        json.dumps({"device": "ble:aa", "metric": "temperature", "value": 20.0 + i, "ts": now - i})
        + "\n" for i in range(READINGS)) + "not json\n")  # one decode error
    drivers: list[dict[str, Any]] = [{"type": "replay", "name": "park", "path": str(data), "speed": 0}]
    if broken_driver:
        drivers.append({"type": "replay", "name": "harbour", "path": str(tmp_path / "missing.csv")})
    port = free_port()
    config = parse_config({
        "gateway": {"id": "cabinet-17", "state_dir": str(tmp_path / "state")},
        "windows": {"window": 1, "grace": 0.0},
        "health": {"listen": f"127.0.0.1:{port}"},
        "runtime": {"restart_backoff_initial": 120.0, "restart_backoff_max": 120.0},
        "drivers": drivers,
    })
    return Gateway(config), f"http://127.0.0.1:{port}"


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


async def started(gateway: Gateway, readings: int) -> asyncio.Task[Any]:
    task = asyncio.create_task(gateway.run(duration=60))
    await async_wait_for(lambda: bool(gateway.supervisors)
                         and sum(s.ctx.readings for s in gateway.supervisors) == readings, timeout=20)
    await async_wait_for(lambda: gateway.runners[0].forwarded_batches >= 1, timeout=20,
                         what="a batch acknowledged")
    return task


async def test_endpoints_and_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gateway, base = make_gateway(tmp_path)
    task = await started(gateway, READINGS)
    try:
        code, kind, metrics = await asyncio.to_thread(get, base + "/metrics")
        assert code == 200 and kind.startswith("text/plain")
        for name in ('edge_gateway_build_info{gateway="cabinet-17",python=', "process_cpu_seconds_total",
                     "process_resident_memory_bytes", 'edge_gateway_uplink_backlog_batches{uplink="file"}',
                     'edge_gateway_uplink_oldest_unacknowledged_age_seconds{uplink="file"}',
                     f'edge_gateway_readings_total{{driver="park"}} {READINGS}.0',
                     "edge_gateway_start_time_seconds", "edge_gateway_last_tick_timestamp_seconds"):
            assert name in metrics, name
        code, _, health = await asyncio.to_thread(get, base + "/healthz")
        assert code == 200 and health.split("\n")[0] in ("ok", "degraded")
        code, kind, body = await asyncio.to_thread(get, base + "/status.json")
        status = json.loads(body)
        assert code == 200 and kind == "application/json"
        assert status["gateway"] == "cabinet-17" and status["version"]
        assert [(d["name"], d["devices"], d["readings"], d["up"]) for d in status["drivers"]] == [
            ("park", 1, READINGS, True)]
        assert status["drivers"][0]["last_reading_age"] is not None
        assert status["uplinks"][0]["name"] == "file" and status["uplinks"][0]["forwarded_batches"] >= 1  # lower bound: the 7 windows close over a second, in as many batches as ticks took them
        assert status["outbox"]["max_bytes"] == 256 * 1024 * 1024
        for path in ("/nope", "/metrics/x", "/status"):
            assert (await asyncio.to_thread(get, base + path))[0] == 404, path

        exit_code = await asyncio.to_thread(cli_main, ["status", "--url", base])
        out = capsys.readouterr().out
        assert exit_code == {"ok": 0, "degraded": 1}[status["verdict"]]
        lines = out.splitlines()
        lines = lines[[i for i, line in enumerate(lines) if line.startswith("gateway cabinet-17 ")][0]:]
        assert lines[0].startswith("gateway cabinet-17   edge-gateway ")
        assert any(line.startswith("park ") and f" {READINGS} " in line for line in lines), out
        assert len(lines) <= 24 and max(map(len, lines)) <= 80, out
        assert await asyncio.to_thread(cli_main, ["status", "--url", base, "--json"]) == exit_code
        assert json.loads(capsys.readouterr().out)["drivers"][0]["readings"] == READINGS
        # -c reads only [health] listen: a technician's shell cannot read the service's
        # credentials (systemd LoadCredential), and the status must not need them
        installed = tmp_path / "installed.toml"
        installed.write_text(f'[gateway]\nid = "cabinet-17"\n[health]\nlisten = "{base.removeprefix("http://")}"\n'
                             '[[uplinks]]\ntype = "mqtt"\nusername = "gw"\npassword = "credential:mqtt-password"\n')
        assert await asyncio.to_thread(cli_main, ["status", "-c", str(installed)]) == exit_code
        assert any(line.startswith("gateway cabinet-17 ") for line in capsys.readouterr().out.splitlines())
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=20)
    # nobody answers now: a distinct exit status
    assert await asyncio.to_thread(cli_main, ["status", "--url", base]) == 3


async def test_a_failed_driver_makes_healthz_503_with_the_reason(tmp_path: Path) -> None:
    gateway, base = make_gateway(tmp_path, broken_driver=True)
    task = await started(gateway, READINGS)
    try:
        await async_wait_for(lambda: gateway.supervisors[1].restarts >= 1, timeout=20)
        code, _, body = await asyncio.to_thread(get, base + "/healthz")
        assert code == 503
        assert body.splitlines()[:2] == ["unhealthy", "driver harbour failed and waits to restart"]
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=20)


def png_size_and_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and raw rows of an 8-bit RGB(A) PNG (what chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6)
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for x in range(stride):
            left = row[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                row[x] = (row[x] + left) & 255
            elif kind == 2:
                row[x] = (row[x] + up) & 255
            elif kind == 3:
                row[x] = (row[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                row[x] = (row[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(row))
        previous = row
    return width, height, rows


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (apt-get install -y chromium)")
@pytest.mark.slow  # a real process
async def test_status_page_in_headless_chromium_on_a_phone(tmp_path: Path) -> None:
    gateway, base = make_gateway(tmp_path)
    task = await started(gateway, READINGS)
    shot = tmp_path / "status.png"
    chrome = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=390,844"]
    env = {**os.environ, "HOME": str(tmp_path)}
    try:
        dom = await asyncio.to_thread(subprocess.run, [*chrome, "--dump-dom", base + "/"],
                                      capture_output=True, text=True, timeout=90, env=env)
        await asyncio.to_thread(subprocess.run, [*chrome, f"--screenshot={shot}", base + "/"],
                                capture_output=True, text=True, timeout=90, env=env)
        status = json.loads((await asyncio.to_thread(get, base + "/status.json"))[2])
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, timeout=20)
    html = dom.stdout
    assert '<h1 id="gateway">cabinet-17</h1>' in html, dom.stderr[-2000:]
    # one device (ble:aa), its readings
    assert f'<tr class="driver"><td>park</td><td class="n">1</td><td class="n">{READINGS}</td>' in html
    assert '<tr class="uplink"><td>file</td>' in html
    assert f'class="v {status["verdict"]}"' in html
    assert 'data-fits="true"' in html  # one screen at 390x844: no scrolling either way
    assert "http://" not in html.split("</title>")[1] and "src=" not in html  # no external assets
    width, height, rows = png_size_and_pixels(shot)
    assert (width, height) == (390, 844)
    banner = {"ok": bytes((0x1B, 0x7F, 0x3B)), "degraded": bytes((0xB3, 0x6B, 0x00))}[status["verdict"]]
    channels = len(rows[0]) // width
    banner_rows = [y for y, row in enumerate(rows)
                   if any(row[x:x + 3] == banner for x in range(0, len(row), channels))]
    assert banner_rows and banner_rows[0] < 150  # the verdict is at the top, in its colour
