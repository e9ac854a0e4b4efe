"""The real gateway as a subprocess (`python -m gateway.cli run`), for end-to-end tests."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from gateway.batch import decode_document
from gateway.health import fetch_status
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def write_replay(path: Path, devices: Iterable[str], steps: int, step_seconds: float,
                 metrics: tuple[str, ...] = ("temperature", "humidity"), noisy: bool = False) -> int:
    """A JSON Lines recording; returns the number of readings in it. `noisy` values vary like
    real sensors' (batches compress far less than the default's repeating pattern)."""
    rng = random.Random(7)
    lines = []
    base = 1_700_000_000.0  # recorded time; replayed at the recorded pace with fresh timestamps
    for step in range(steps):
        for device in devices:
            for n, metric in enumerate(metrics):
                value = 15.0 + (step % 17) * 0.25 + n * 40
                if noisy:
                    value = round(rng.uniform(-40.0, 60.0), 2)
                lines.append(json.dumps({"device": device, "metric": metric, "value": value,
                                         "ts": base + step * step_seconds}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


class GatewayProcess:
    def __init__(self, workdir: Path, *, gateway_id: str, replay: Path, broker_port: int,
                 max_bytes: int = 64 * 1024 * 1024, batch_max_records: int = 500,
                 uplink_extra: str = "") -> None:
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.metrics_port = free_port()
        self.config_path = workdir / "gateway.toml"
        self.log_path = workdir / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.write_config(gateway_id=gateway_id, replay=replay, broker_port=broker_port,
                          max_bytes=max_bytes, batch_max_records=batch_max_records,
                          uplink_extra=uplink_extra)

    def write_config(self, *, gateway_id: str, replay: Path, broker_port: int, max_bytes: int,
                     batch_max_records: int, uplink_extra: str) -> None:
        self.config_path.write_text(f"""
[gateway]
id = "{gateway_id}"
state_dir = "{self.state_dir}"

[windows]
window = 1
grace = 0.2
checkpoint = 0.5

[outbox]
max_bytes = {max_bytes}
batch_max_records = {batch_max_records}
commit_interval = 0.1

[health]
listen = "127.0.0.1:{self.metrics_port}"

[log]
format = "json"
level = "info"

[runtime]
shutdown_timeout = 10
restart_backoff_initial = 0.2
restart_backoff_max = 1.0

[[drivers]]
type = "replay"
path = "{replay}"

[[uplinks]]
type = "mqtt"
host = "127.0.0.1"
port = {broker_port}
keepalive = 5
connect_timeout = 2
ack_timeout = 5
# the broker keeps nothing for an absent receiver: keep batches until one listens
require_subscriber = true
{uplink_extra}
""")

    def start(self) -> GatewayProcess:
        self.runs += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in wait()
        self._log = log
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        return self

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        try:
            return fetch_status(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1.0)
        except OSError:
            return {}

    def metric(self, name: str, **labels: str) -> float:
        for sample_labels, value in self.metrics().get(name, []):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return -1.0

    def alive(self) -> bool:
        if self.process is None:
            return False
        if self.process.poll() is not None:
            raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 20) -> int:
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int:
        return self._end(signal.SIGKILL, 10)

    def _end(self, signum: int, timeout: float) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()
        self.process = None
        return code

    def stored_batches(self) -> list[tuple[int, str]]:
        """(seq, batch_id) of every batch still in the outbox database (read from outside)."""
        with sqlite3.connect(f"file:{self.state_dir / 'outbox.sqlite'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT seq, payload FROM batches ORDER BY seq").fetchall()
        return [(seq, decode_document(payload).batch_id) for seq, payload in rows]

    def evicted_seqs(self) -> set[int]:
        with sqlite3.connect(f"file:{self.state_dir / 'outbox.sqlite'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT first_seq, last_seq, batches FROM evictions").fetchall()
        seqs: set[int] = set()
        for first, last, batches in rows:
            assert last - first + 1 == batches, (first, last, batches)
            seqs.update(range(first, last + 1))
        return seqs
