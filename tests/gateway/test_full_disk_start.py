"""The gateway started on a full disk: up and degraded, watchdog fed, resumes when space returns.

The disk is real: a 1 MiB tmpfs the test mounts over the state dir and fills with a file, as a
log that ate the SD card would. Mounting needs root (CAP_SYS_ADMIN); where that is refused the
tests say so and skip.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.batches import read_batches
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
READINGS = 120


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A mounted 1 MiB tmpfs, filled to the last block; yields the filler file's path."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        (disk / "state").mkdir()
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        with pytest.raises(OSError) as refused:
            (disk / "probe").write_bytes(b"\0" * 4096)
        assert refused.value.errno == errno.ENOSPC
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


class NotifySocket:
    """What the gateway tells systemd (sd_notify datagrams), as systemd would receive it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.lines: list[tuple[float, str]] = []

    def poll(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while True:
                for line in self.sock.recv(4096).decode().splitlines():
                    self.lines.append((time.monotonic(), line))
        return [line for _, line in self.lines]

    def close(self) -> None:
        self.sock.close()


def write_config(tmp: Path, replay: Path) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "gw-full-disk"
state_dir = "{tmp / 'disk' / 'state'}"
[windows]
window = 1
grace = 0.2
max_lateness = 86400.0
[outbox]
commit_interval = 0.2
[health]
listen = ""
[log]
format = "json"
[runtime]
shutdown_timeout = 5.0
[[drivers]]
type = "replay"
path = "{replay}"
speed = 0.0
timestamps = "original"
[[uplinks]]
type = "file"
directory = "{tmp / 'out'}"
""")
    return path


def start(tmp: Path, notify: NotifySocket, *extra: str) -> subprocess.Popen[bytes]:
    replay = tmp / "readings.jsonl"
    t0 = time.time() - 3600
    replay.write_text("".join(json.dumps({"device": f"test:d{i % 4}", "metric": "temperature", "value": float(i),
                                          "ts": t0 + i * 0.5}) + "\n" for i in range(READINGS)))
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(write_config(tmp, replay)),
                             *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def degraded(notify: NotifySocket) -> bool:
    return any(line.startswith("STATUS=degraded: disk full") for line in notify.poll())


def test_started_on_a_full_disk_waits_fed_then_delivers_everything(tmp_path: Path, full_disk: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = start(tmp_path, notify, "--duration", "4", "--drain")
    try:
        wait_for(lambda: degraded(notify), timeout=30, what="STATUS=degraded: disk full")
        assert "READY=1" in notify.poll()  # up, as far as systemd is concerned
        since = time.monotonic()

        def fed_for_three_intervals() -> bool:
            notify.poll()
            return any(t > since + 3 and line == "WATCHDOG=1" for t, line in notify.lines)

        wait_for(fed_for_three_intervals, timeout=30, what="WATCHDOG=1 three seconds into the wait")
        fed = [t for t, line in notify.lines if line == "WATCHDOG=1" and t >= since]
        assert proc.poll() is None
        assert max(b - a for a, b in zip([since, *fed], fed, strict=False)) < 1.0  # never a gap past WATCHDOG_USEC
        full_disk.unlink()  # the disk frees
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    events = [json.loads(line).get("event") for line in err.decode().splitlines() if line.startswith("{")]
    assert events.count("outbox_disk_full_at_start") == 1 and "outbox_opened_after_disk_full" in events
    batches = read_batches(tmp_path / "out" / "batches.jsonl.gz")
    latest: dict[tuple[str, str, int], int] = {}
    for batch in batches:
        for window in batch.windows:
            key = (window.device, window.metric, window.start)
            latest[key] = max(latest.get(key, 0), window.count)
    assert sum(latest.values()) == READINGS  # every reading of the replay, none twice


def test_sigterm_while_waiting_for_space_exits_at_once(tmp_path: Path, full_disk: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = start(tmp_path, notify)
    try:
        wait_for(lambda: degraded(notify), timeout=30, what="STATUS=degraded: disk full")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - sent < 5.0  # the unit's stop timeout is far longer
        assert "STOPPING=1" in notify.poll()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
