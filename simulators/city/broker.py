"""A private Mosquitto on a free loopback port: the platform's broker (persistent, so an outage
loses nothing it acknowledged) or the network server's broker."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["Mosquitto", "free_port"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    def __init__(self, workdir: Path, *, persistent: bool = True) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.outages = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "user root",  # running as root it would drop to `mosquitto` and lose its own files
            f"persistence {'true' if self.persistent else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type subscribe",  # wait_for_subscription reads these lines
            "allow_anonymous true",
            "max_inflight_messages 1000",
            "max_queued_messages 1000000",
            "autosave_interval 0",
            f"listener {self.port} 127.0.0.1",
        ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> None:
        config = self._config()
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode} (see {self.workdir})")
            try:
                with socket.create_connection(self.address, timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.05)  # poll step while the broker starts

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the persistent store is written on the way out
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def wait_for_subscription(self, client_id: str, topic: str, within: float = 20.0) -> bool:
        """True once the broker logged `client_id` subscribing to `topic` (a publisher must not
        start before its consumer listens: a broker keeps nothing for absent subscribers)."""
        log = self.workdir / "mosquitto.log"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                text = ""
            if any(client_id in line and line.rstrip().endswith(" " + topic) for line in text.splitlines()):
                return True
            time.sleep(0.1)  # poll step while the gateway subscribes
        return False

    def outage_begin(self) -> None:
        self.outages += 1
        self.stop()

    def outage_end(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except RuntimeError:  # the port may linger a moment in TIME_WAIT
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
