"""The health listener and the status board: `/metrics`, `/healthz`, `/status.json`, `/`.

Every component owns its figures and exposes them as a collector (gateway/metrics.py); the
runtime registers them in the gateway's `MetricsRegistry`. This module adds what belongs to
the process rather than to a component (build info, start time, CPU and memory) and serves
that registry: `/metrics` is the registry as Prometheus text, and the status views are built
from the same registry (gateway/status.py), so nothing here reads a component's state.

The listener (loopback by default) serves `/metrics`, `/healthz` (200, or 503 with the reasons
when unhealthy), `/status.json` and `/`, the status page (gateway/status.py); any other path is a
404. It runs on its own thread, off the event loop.
"""

from __future__ import annotations

import json
import platform
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.metrics import PREFIX as P
from gateway.metrics import MetricsRegistry
from gateway.status import render_html, snapshot

__all__ = ["BuildInfo", "HealthServer", "StatusBoard", "fetch_status", "format_status"]


class BuildInfo:
    """The process's own figures: which gateway and version run, since when."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        build = InfoMetricFamily(P + "build", "Version of the running gateway")
        build.add_metric([], {"version": __version__, "gateway": self.gateway_id,
                              "python": platform.python_version()})
        yield build
        yield GaugeMetricFamily(P + "start_time_seconds", "Start of this process (Unix s)", value=self.started)


class StatusBoard:
    """The gateway's registry and the status built from it; exists whether or not the health
    listener is on (systemd STATUS= uses it). It adds build info and the process metrics
    (CPU, memory, descriptors) to the registry it is given."""

    def __init__(self, registry: MetricsRegistry, gateway_id: str) -> None:
        self.registry = registry
        registry.register(BuildInfo(gateway_id))
        ProcessCollector(registry=registry)

    def status(self) -> dict[str, Any]:
        return snapshot(self.registry)


class _Handler(BaseHTTPRequestHandler):
    board: StatusBoard

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, generate_latest(self.board.registry))
            return
        if path not in ("/", "/healthz", "/status.json"):
            self._answer(404, "text/plain; charset=utf-8", b"not found: try /, /metrics, /healthz, /status.json\n")
            return
        status = self.board.status()
        if path == "/healthz":
            unhealthy = status["verdict"] == "unhealthy"
            text = status["verdict"] + "".join(f"\n{reason}" for reason in status["reasons"]) + "\n"
            self._answer(503 if unhealthy else 200, "text/plain; charset=utf-8", text.encode())
        elif path == "/status.json":
            self._answer(200, "application/json", json.dumps(status, indent=1).encode())
        else:
            self._answer(200, "text/html; charset=utf-8", render_html(status).encode())

    def _answer(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """Requests are not logged: a scrape every 15 s would fill the journal."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """The health listener on a local address (its own thread, off the event loop)."""

    def __init__(self, board: StatusBoard, listen: str) -> None:
        self.board = board
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"board": self.board})
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._server = server_class((self.host, self.port), handler)
        except OSError as error:
            raise OSError(f"health.listen {self.host}:{self.port}: cannot serve /metrics ({error.strerror or error})") from error
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def fetch_status(url: str, timeout: float = 3.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local URL
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(P) and not sample.name.endswith("_created"):
                out.setdefault(sample.name.removeprefix(P).removesuffix("_total"), []).append(
                    (dict(sample.labels), sample.value)
                )
    return out


def format_status(status: dict[str, list[tuple[dict[str, str], float]]]) -> str:
    lines = []
    for name in sorted(status):
        for labels, value in status[name]:
            label = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"
            lines.append(f"  {name + ('{' + label + '}' if label else ''):<60} {shown:>16}")
    return "\n".join(lines)
