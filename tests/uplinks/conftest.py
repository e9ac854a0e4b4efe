"""Fixtures for the uplink tests: batch documents, brokers with auth/TLS, VictoriaMetrics, and
a tiny HTTP server that answers the status codes a real server cannot be made to answer."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.batch import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Batch,
    BatchDocument,
    EventRecord,
    WindowRecord,
    encode_document,
)
from gateway.uplinks.base import UplinkContext
from tests.support.mosquitto import Broker, TlsFiles, make_tls
from tests.support.ports import free_port
from tests.support.wait import wait_for

VICTORIA_METRICS = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
GATEWAY = "gw-test"


# ------------------------------------------------------------------ batches

def window_records(seq: int, start: int, devices: int = 3) -> list[WindowRecord]:
    """A gauge, a counter and a state window per device: every value field kind appears."""
    records: list[WindowRecord] = []
    for d in range(devices):
        device = f"lora:70b3d57ed00{seq % 10}{d:03d}"
        records.append(WindowRecord(
            device=device, metric="temperature", unit="Cel", kind="gauge", start=start, window=60,
            count=5 + d, min=10.5 + d, max=12.25 + d, mean=11.5 + d, last=11.0 + d,
        ))
        records.append(WindowRecord(
            device=device, metric="energy_active_import_register", unit="Wh", kind="counter",
            start=start, window=60, count=4, first=1000.0 + seq, last=1010.5 + seq, delta=10.5,
            resets=0,
        ))
        records.append(WindowRecord(
            device=device, metric="connector_status", unit="/", kind="state", start=start,
            window=60, count=3, last="Charging", transitions=2,
            durations={"Available": 20.0, "Preparing": 5.5, "Charging": 34.5},
        ))
    return records


def make_batch(seq: int, *, start: int | None = None, devices: int = 3, stream: str = "s-test",
               gateway: str = GATEWAY, events: bool = False) -> Batch:
    start = start if start is not None else (int(time.time()) // 60 - 100 + seq) * 60
    if events:
        document = BatchDocument(
            schema=SCHEMA_NAME, version=SCHEMA_VERSION, gateway=gateway, stream=stream, seq=seq,
            batch_id=uuid.uuid4().hex, created=time.time(),
            events=[EventRecord(device="ocpp:CP-1/1", ts=start + 1.25, name="connector_status",
                                severity="alarm", metric="connector_status", value="Faulted",
                                detail={"error_code": "GroundFailure"})],
        )
        records = 1
    else:
        windows = window_records(seq, start, devices)
        document = BatchDocument(
            schema=SCHEMA_NAME, version=SCHEMA_VERSION, gateway=gateway, stream=stream, seq=seq,
            batch_id=uuid.uuid4().hex, created=time.time(), windows=windows,
        )
        records = len(windows)
    return Batch(seq=seq, kind="events" if events else "windows",
                 payload=encode_document(document), records=records)


def uplink_context(tmp_path: Path, name: str) -> UplinkContext:
    return UplinkContext(name, gateway_id=GATEWAY, state_dir=str(tmp_path))


# ------------------------------------------------------------------ brokers

@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(workdir=tmp_path, users={"gw-test": "right-horse-battery"}).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Broker]:
    broker = Broker(workdir=tmp_path, tls=tls_files, require_certificate=True).start()
    try:
        yield broker
    finally:
        broker.stop()


# ------------------------------------------------------------------ VictoriaMetrics

@dataclass
class VictoriaMetrics:
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VictoriaMetrics:
        self.port = free_port()
        self.process = subprocess.Popen(
            [VICTORIA_METRICS, f"-httpListenAddr=127.0.0.1:{self.port}",
             f"-storageDataPath={self.workdir / 'data'}", "-retentionPeriod=100y",
             "-loggerLevel=ERROR", "-search.disableCache"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._healthy, timeout=20, what=f"victoria-metrics on port {self.port}")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("victoria-metrics exited at start")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def export(self, match: str) -> list[dict[str, Any]]:
        # Written points become searchable at the next in-memory flush (every few seconds);
        # /internal/force_flush makes that happen now, the caller still polls.
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5):
            pass
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=5) as answer:
            return [json.loads(line) for line in answer.read().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """One VictoriaMetrics per test session; tests keep apart by gateway tag."""
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria")).start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ scripted HTTP server

@dataclass
class ScriptedAnswer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # answer this when the request body (decompressed) holds more lines than this
    max_lines: int | None = None


class ScriptedHttpServer:
    """Answers POSTs from a script: a list of answers used in order (the last one repeats), or
    a `max_lines` rule answering 413 to larger bodies. Records every request."""

    def __init__(self) -> None:
        self.script: list[ScriptedAnswer] = [ScriptedAnswer(204)]
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.times: list[float] = []  # monotonic arrival time of each request
        self.raw_reply: bytes | None = None  # garbage instead of HTTP
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                import gzip

                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                outer.times.append(time.monotonic())
                outer.requests.append((self.path, dict(self.headers), body))
                if outer.raw_reply is not None:
                    self.wfile.write(outer.raw_reply)
                    self.close_connection = True
                    return
                answer = outer.script[0] if len(outer.script) == 1 else outer.script.pop(0)
                status = answer.status
                if answer.max_lines is not None:
                    status = 413 if len(body.splitlines()) > answer.max_lines else 204
                self.send_response(status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def scripted_http() -> Iterator[ScriptedHttpServer]:
    server = ScriptedHttpServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
