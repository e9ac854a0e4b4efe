"""The gateway as a real process: SIGKILL mid-run and restart, SIGTERM shutdown."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from gateway.batch import BatchDocument, decode_document
from tests.support.batches import read_batches
from tests.support.wait import wait_for

# slow: the gateway as a real process (make test-fast leaves it out)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp: Path, replay: Path, *, window: float = 1, checkpoint: float = 0.3) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(
        f"""
[gateway]
id = "gw-crash"
state_dir = "{tmp / 'state'}"
[windows]
window = {int(window)}
grace = 0.2
max_lateness = 600.0
checkpoint = {checkpoint}
[outbox]
commit_interval = 0.1
[health]
listen = ""
[log]
format = "json"
[runtime]
shutdown_timeout = 5.0
[[drivers]]
type = "replay"
path = "{replay}"
speed = 1.0
timestamps = "original"
[[uplinks]]
type = "file"
"""
    )
    return path


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap_gateways() -> Iterator[None]:
    """A failed assertion must not leave a gateway process running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL if "--drain" not in extra else subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _started.append(proc)
    return proc


def delivered(state: Path) -> list[BatchDocument]:
    path = state / "batches" / "batches.jsonl.gz"
    if not path.exists():
        return []
    try:
        return read_batches(path)
    except EOFError:  # the gateway is appending a member right now
        return []


def window_keys(batches: list[BatchDocument]) -> dict[tuple[str, str, int], int]:
    """Latest count per window key across all delivered batches."""
    out: dict[tuple[str, str, int], int] = {}
    for batch in batches:
        for w in batch.windows:
            key = (w.device, w.metric, w.start)
            out[key] = max(out.get(key, 0), w.count)
    return out


def open_checkpoint(db: sqlite3.Connection, closed_before: int) -> dict[tuple[str, str, int], int]:
    """Reading count per open window in the checkpoint log (later rows hold newer versions)."""
    out: dict[tuple[str, str, int], int] = {}
    for (blob,) in db.execute("SELECT blob FROM open_log ORDER BY id"):
        for start, device, metric, acc in msgspec.msgpack.decode(zlib.decompress(blob)):
            if start >= closed_before:
                out[(device, metric, start)] = acc[1]
    return out


def test_sigkill_mid_run_loses_no_closed_window_and_resumes_open_ones(tmp_path: Path) -> None:
    t0 = time.time() + 0.5
    replay = tmp_path / "readings.jsonl"
    with replay.open("w") as out:
        for i in range(200):  # 10 s of readings, 3 devices, every 0.05 s
            out.write(json.dumps({"device": f"test:d{i % 3}", "metric": "temperature",
                                  "value": float(i), "ts": t0 + i * 0.05}) + "\n")
    config = write_config(tmp_path, replay)
    state = tmp_path / "state"
    proc = start(config)
    try:
        wait_for(lambda: len(window_keys(delivered(state))) >= 6, timeout=20, what="some windows delivered")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # what the killed gateway had closed: delivered, or committed in the outbox
    before = window_keys(delivered(state))
    db = sqlite3.connect(state / "outbox.sqlite")
    for (payload,) in db.execute("SELECT payload FROM batches"):
        for key, count in window_keys([decode_document(payload)]).items():
            before[key] = max(before.get(key, 0), count)
    closed_before = int(dict(db.execute("SELECT key, value FROM meta").fetchall())["closed_before"])
    checkpointed = open_checkpoint(db, closed_before)
    db.close()
    assert before, "the kill came after windows were closed"
    # restart with nothing more to replay, close everything, deliver
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = write_config(tmp_path, empty)
    proc = start(config, "--duration", "3", "--drain")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    after = window_keys(delivered(state))
    missing = [k for k in before if k not in after]
    assert not missing, f"closed before the kill but never delivered: {missing}"
    assert all(after[k] >= c for k, c in before.items())
    resumed = json.loads([line for line in err.decode().splitlines() if "gateway_started" in line][0])
    assert resumed["resumed_open_windows"] == len(checkpointed)
    for key, count in checkpointed.items():
        assert after.get(key, 0) >= count, f"open window {key} did not resume from its checkpoint"


def test_sigterm_stops_cleanly_and_checkpoints_open_windows(tmp_path: Path) -> None:
    t0 = time.time()
    replay = tmp_path / "readings.jsonl"
    replay.write_text("".join(
        json.dumps({"device": "test:d", "metric": "temperature", "value": 1.0, "ts": t0 + i}) + "\n"
        for i in range(3600)
    ))
    # no periodic checkpoint: a row in open_log can only come from the shutdown
    config = write_config(tmp_path, replay, window=3600, checkpoint=3600)
    proc = start(config)
    state = tmp_path / "state"

    def ticking() -> bool:
        # the first tick persists the close boundary; the replay emitted its first reading
        # before that tick (drivers start before the tick loop and the first record is due at once)
        if not (state / "outbox.sqlite").exists():
            return False
        db = sqlite3.connect(state / "outbox.sqlite")
        try:
            return db.execute("SELECT 1 FROM meta WHERE key='closed_before'").fetchone() is not None
        except sqlite3.Error:
            return False
        finally:
            db.close()

    wait_for(ticking, timeout=20, what="the tick loop committing")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    # shutdown_timeout (5 s) bounds the stop; the rest is interpreter exit on a busy machine
    assert time.monotonic() - started < 8.0, "shutdown_timeout bounds the stop"
    assert b"gateway_stopped" in err
    db = sqlite3.connect(state / "outbox.sqlite")
    rows = db.execute("SELECT COUNT(*) FROM open_log").fetchone()[0]
    checkpointed = open_checkpoint(db, -(2**62))
    db.close()
    assert rows == 1, "the open hour-long window was checkpointed on the way out"
    assert {key[:2] for key in checkpointed} == {("test:d", "temperature")}


def test_unwritable_state_dir_is_one_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = tmp_path / "g.toml"
    config.write_text(f'[gateway]\nid = "g"\nstate_dir = "{blocker}/state"\n[health]\nlisten = ""\n'
                      f'[[drivers]]\ntype = "replay"\npath = "x.csv"\n')
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot open outbox database" in result.stderr and "Traceback" not in result.stderr
    assert os.path.exists(blocker)


def test_busy_metrics_port_names_the_key(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "g.toml"
        config.write_text(f'[gateway]\nid = "g"\nstate_dir = "{tmp_path / "state"}"\n'
                          f'[health]\nlisten = "127.0.0.1:{port}"\n'
                          f'[[drivers]]\ntype = "replay"\npath = "x.csv"\n')
        result = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"health.listen 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_daemon_notifies_systemd_through_the_environment(tmp_path: Path) -> None:
    """As under Type=notify: NOTIFY_SOCKET and WATCHDOG_USEC come from the environment."""
    import socket

    path = str(tmp_path / "notify.sock")
    received: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.1)

        def got(line: str) -> bool:
            try:
                received.extend(sock.recv(4096).decode().splitlines())
            except TimeoutError:
                pass
            return line in received

        replay = tmp_path / "empty.jsonl"
        replay.write_text("")
        config = write_config(tmp_path, replay)
        env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "500000"}
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _started.append(proc)
        wait_for(lambda: got("READY=1"), timeout=20, what="READY=1")
        wait_for(lambda: got("WATCHDOG=1"), timeout=10, what="WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_for(lambda: got("STOPPING=1"), timeout=5, what="STOPPING=1")
