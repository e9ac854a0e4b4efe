"""The city in a box: every simulator in one event loop, the real gateway as a subprocess, faults
on a timetable, a progress display, and the loss report at the end.

Order of a run: brokers (platform, network server) -> platform receiver -> serial ptys and the
private D-Bus with the mock BlueZ -> the gateway config written out -> the gateway process (its
/metrics answering) -> packet forwarders, network-server publisher, charge points -> the
scenario's duration with its faults -> senders stop, the gateway takes what is in flight ->
/metrics scraped -> SIGTERM with --drain (every window closed and delivered) -> report.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.city.attribution import eviction_losses, read_evicted_ranges, read_stored_batches
from simulators.city.ble_fleet import BleFleet
from simulators.city.broker import Mosquitto, free_port
from simulators.city.faults import Injection, injection_for
from simulators.city.fleet import DeviceGroup
from simulators.city.lora_fleet import LoRaFleet
from simulators.city.procs import charge_point_fleet
from simulators.city.procstat import ProcSample, sample
from simulators.city.report import (
    BatchBooks,
    FileTail,
    Outages,
    build_report,
    chain,
    fit,
    parse_metrics,
    render_report,
    write_report,
)
from simulators.city.scenario import BrokerRestart, CityConfig, ClockJump, Scenario
from simulators.city.serial_fleet import SerialFleet
from simulators.city.tomlout import to_toml

__all__ = ["CityRun", "RunOptions", "print_report"]


# ------------------------------------------------------------------------------ the run

COMMIT_INTERVAL = 0.5  # the gateway's outbox.commit_interval in a city run


@dataclass
class RunOptions:
    workdir: Path
    progress: bool = True
    report_path: Path | None = None
    python: str = sys.executable
    settle_timeout: float = 20.0  # after the senders stop, wait at most this for the gateway to go quiet
    stop_timeout: float = 90.0  # SIGTERM + drain
    log_level: str = "warning"
    # per-device loss categories measured but not applied (simulators.city.report.PER_DEVICE):
    # a test's proof that nothing else absorbs them
    withhold: frozenset[str] = frozenset()
    sim_procs: int = 1  # processes running the charge points (simulators.city.procs)


@dataclass
class ProcStats:
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    write_bytes: int = 0


@dataclass
class _Active:
    injection: Injection
    ends: float | None  # monotonic time the fault is undone; None: one-shot


@dataclass(frozen=True)
class _Mark:
    """The gateway at one moment: its process and its /metrics."""

    proc: ProcSample
    metrics: dict[str, Any] | None


@dataclass
class CityRun:
    scenario: Scenario
    scale: float
    options: RunOptions
    faults_done: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        work = self.options.workdir
        self.state_dir = work / "gateway-state"
        self.batches_dir = self.state_dir / "batches"
        self.books = BatchBooks()
        self.platform: Mosquitto | None = None
        self.ns_broker: Mosquitto | None = None
        self.receiver: Any = None
        self.tail: FileTail | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""
        self.metrics: dict[str, Any] = {}
        self.proc = ProcStats()
        self.offset = 0.0
        s = self.scenario
        self.lora = LoRaFleet(s.lorawan, seed=s.city.seed, first_eui=0)
        self.serial = SerialFleet(s.serial, work / "dev")
        self.ble = BleFleet(s.ble)
        self.ocpp = charge_point_fleet(s.charge_points, seed=s.city.seed, procs=self.options.sim_procs)
        self.groups: list[DeviceGroup] = [self.lora, self.serial, self.ble, self.ocpp]
        self.sending_seconds = 0.0
        self.sent_before_main = 0
        self.gateway_summary = ""
        self.metrics_at_stop: dict[str, Any] = {}
        self._steady_begin: _Mark | None = None  # devices start reporting
        self._steady_end: _Mark | None = None  # devices stop
        self.injections = [injection_for(f) for f in sorted(self.scenario.faults, key=lambda f: f.at)]
        self.outages = Outages()
        self.stored_log = work / "stored-batches.jsonl"
        self._earlier_lives: list[dict[str, Any]] = []  # each ended gateway process's last /metrics
        self._sent_history: list[tuple[float, dict[str, int]]] = []  # (monotonic, sent by device), kill faults
        self._down_since: tuple[float, dict[str, int]] | None = None
        self._bus = ""
        self._config_path = work / "gateway.toml"
        self._ports: dict[str, Any] = {}

    # -------------------------------------------------------------- set-up

    def _gateway_config(self, ports: dict[str, Any], bus: str) -> dict[str, Any]:
        c = self.scenario.city
        drivers: list[dict[str, Any]] = []
        ns = self.ns_broker.address if self.ns_broker else None
        drivers += self.lora.driver_configs(udp_ports=ports["udp"], ns_broker=ns)
        drivers += self.serial.driver_configs()
        drivers += self.ble.driver_configs() if bus else []
        drivers += self.ocpp.driver_configs(ports["ocpp"])
        if self.platform is not None:
            uplink: dict[str, Any] = {"type": "mqtt", "name": "platform", "host": "127.0.0.1", "port": self.platform.port,
                                      "protocol": "5", "topic_prefix": "city", "keepalive": 10, "ack_timeout": 10.0,
                                      "connect_timeout": 3.0, "ack": c.mqtt_ack}
            if c.mqtt_ack == "platform":
                uplink["platform_ack_timeout"] = 3.0
        else:
            uplink = {"type": "file", "name": "file", "directory": str(self.batches_dir.resolve()),
                      "rotate_bytes": 256 * 1024 * 1024, "keep_files": 1000}
        return {
            "gateway": {"id": f"city-{c.name}", "state_dir": str(self.state_dir.resolve())},
            "windows": {"window": c.window, "grace": c.grace, "max_lateness": c.max_lateness, "checkpoint": c.checkpoint},
            "outbox": {"max_bytes": c.outbox_max_bytes, "commit_interval": COMMIT_INTERVAL, "batch_max_records": c.batch_max_records},
            "health": {"listen": f"127.0.0.1:{ports['health']}"},
            "log": {"level": self.options.log_level, "format": "json"},
            "runtime": {"shutdown_timeout": max(30.0, self.options.stop_timeout - 10), "restart_backoff_initial": 0.5,
                        "restart_backoff_max": 3.0},
            "drivers": drivers,
            "uplinks": [uplink],
        }

    def _scrape(self) -> dict[str, Any] | None:
        """The gateway's /metrics, its counters summed over every process of this run."""
        current = self._scrape_life()
        return None if current is None else _over_lives(self._earlier_lives, current)

    def _scrape_life(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as answer:
                return parse_metrics(answer.read().decode())
        except (OSError, ValueError):
            return None

    async def _wait_gateway(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                await asyncio.to_thread(self._log_copier.join, 5.0)
                log = (self.options.workdir / "gateway.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the gateway exited with {self.process.returncode}:\n{log}")
            if await asyncio.to_thread(self._scrape) is not None:
                return
            await asyncio.sleep(0.1)  # poll step while the gateway starts
        raise RuntimeError("the gateway's /metrics did not answer")

    async def _start_gateway(self, config_path: Path, bus: str) -> None:
        env = dict(os.environ)
        if bus:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = bus
        self._spawn(self._gateway_command(config_path), env)
        await self._wait_gateway()

    def _gateway_command(self, config_path: Path) -> list[str]:
        """`edge-gateway run`, or, with faults or an outbox bound below the default, the same
        gateway under simulators.city.gwproc: it records what every stored batch covered
        (evictions named per seq and device) and, for a clock jump, runs on a clock the runner
        steps. A run without either leaves the gateway process exactly as shipped."""
        if not self.scenario.faults and self.scenario.city.outbox_max_bytes >= CityConfig().outbox_max_bytes:
            return [self.options.python, "-m", "gateway.cli", "run", "--config", str(config_path), "--drain", "--summary"]
        command = [self.options.python, "-m", "simulators.city.gwproc", "--config", str(config_path),
                   "--stored-log", str(self.stored_log.resolve()), "--drain", "--summary"]
        if any(isinstance(f, ClockJump) for f in self.scenario.faults):
            offset_file = self.options.workdir / "clock-offset"
            if not offset_file.exists():
                offset_file.write_text("0\n")
            command += ["--offset-file", str(offset_file)]
        return command

    def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        # The gateway logs to a pipe that a thread of this process copies into gateway.log: the
        # gateway's own write_bytes (/proc/<pid>/io, rusage) then count its state folder only.
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent())
        self._proc_started = time.monotonic()
        self._log_copier = threading.Thread(target=_copy_log, args=(self.process.stdout, self.options.workdir / "gateway.log",
                                                                    bool(self._earlier_lives)),
                                            name="gateway-log", daemon=True)
        self._log_copier.start()

    async def start(self) -> None:
        work = self.options.workdir
        marker = work / ".city-run"
        if work.exists() and any(work.iterdir()):
            if not marker.exists():
                raise RuntimeError(f"{work} is not empty and not a folder of an earlier city run: choose another --workdir")
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        marker.write_text("a city run's working folder: replaced by the next run\n")
        s = self.scenario
        for injection in self.injections:
            await injection.prepare(self)
        if s.city.uplink == "mqtt":
            # a broker_restart fault restarts it without persistence: it comes back empty
            persistent = not any(isinstance(f, BrokerRestart) for f in s.faults)
            self.platform = Mosquitto(work / "platform-broker", persistent=persistent)
            await asyncio.to_thread(self.platform.start)
            self.receiver = _make_receiver(self.platform.port, self.books, ack=s.city.mqtt_ack == "platform")
            await self.receiver.start()
        else:
            self.tail = FileTail(self.batches_dir, self.books)
        if any(g.mode == "network_server" and g.count for g in s.lorawan):
            self.ns_broker = Mosquitto(work / "ns-broker", persistent=False)
            await asyncio.to_thread(self.ns_broker.start)
            await self.lora.connect_network_server(self.ns_broker.address)
        await self.serial.start()
        if self.ble.count and (shutil.which("dbus-daemon") is None or importlib.util.find_spec("dbusmock") is None):
            print("city: BLE tags left out of this run: they need dbus-daemon (Debian package `dbus`) and "
                  "python-dbusmock (pip install -e '.[test]')", file=sys.stderr)
            self.ble.groups = []
        bus = await self.ble.start() if self.ble.count else ""
        ports: dict[str, Any] = {
            "udp": {g: free_port(socket.SOCK_DGRAM) for g, group in enumerate(s.lorawan) if group.mode == "concentrator"},
            "ocpp": free_port(),
            "health": free_port(),
        }
        self.metrics_url = f"http://127.0.0.1:{ports['health']}/metrics"
        self._bus, self._ports = bus, ports
        config = self._gateway_config(ports, bus)
        config_path = self._config_path
        config_path.write_text(to_toml(config, header=(
            f"Written by edge-gateway-sim city for scenario {s.city.name!r} at scale {self.scale:g}.\n"
            "Every driver points at the simulators of this run (ports, ptys, private D-Bus).")))
        await self._start_gateway(config_path, bus)
        assert self.process is not None
        await self.serial.hold_until_open(self.process.pid)
        if self.ns_broker is not None:
            broker = self.ns_broker

            async def ns_ready(client_id: str) -> None:
                if not await asyncio.to_thread(broker.wait_for_subscription, client_id, "v3/+/devices/+/up"):
                    print(f"city: {client_id} did not subscribe on the network-server broker", file=sys.stderr)
            self.lora.ns_ready = ns_ready
        await self.lora.start(ports["udp"], self.ns_broker.address if self.ns_broker else None)
        await self.ocpp.start(ports["ocpp"])

    # -------------------------------------------------------------- faults

    async def _begin(self, injection: Injection) -> _Active:
        what = await injection.begin(self)
        self.faults_done.append({"kind": injection.kind, "what": what})
        duration = injection.duration
        return _Active(injection, None if duration is None else time.monotonic() + duration)

    def _mark(self, metrics: dict[str, Any] | None) -> _Mark:
        now = time.monotonic()
        return _Mark(sample(self.process.pid, now) if self.process is not None else ProcSample(now), metrics)

    def _steady(self) -> dict[str, Any]:
        """The gateway while the devices report (start-up and the charge points' boot storm, the
        settle and the drain left out)."""
        begin, end = self._steady_begin, self._steady_end
        if begin is None or end is None or not begin.metrics or not end.metrics:
            return {}
        wall = end.proc.at - begin.proc.at
        readings = sum(end.metrics["readings"].values()) - sum(begin.metrics["readings"].values())
        cpu = end.proc.cpu_seconds - begin.proc.cpu_seconds
        written = end.proc.write_bytes - begin.proc.write_bytes
        return {
            "wall_seconds": round(wall, 2),
            "readings": readings,
            "readings_per_second": round(readings / wall, 1) if wall else None,
            "cpu_seconds": round(cpu, 3),
            "cpu_share": round(cpu / wall, 4) if wall else None,
            "write_bytes": written,
            "write_bytes_per_reading": round(written / readings, 1) if readings else None,
            # what start-up (boot storm, joins) wrote before the devices reported; the rest of the
            # whole-life figure minus these two is the drain
            "write_bytes_before": begin.proc.write_bytes,
            "peak_rss_mib_after_boot": round(begin.proc.peak_rss_mib, 1),
            "rss_mib_at_end": round(end.proc.rss_mib, 1),
        }

    # -------------------------------------------------------------- the gateway stopped and started again

    def _sent_by_device(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for group in self.groups:
            out.update(group.sent())
        return out

    async def stop_gateway_midrun(self, how: signal.Signals) -> float:
        """SIGKILL or SIGTERM the gateway while the devices report; returns the seconds it took
        to exit. Its counters so far are kept (the next process starts from zero); the devices'
        books at the signal start the down interval. After a SIGKILL, what each device sent
        within the checkpoint bound before it is what the crash may have caught unstored."""
        assert self.process is not None
        scraped = time.time()
        last = await asyncio.to_thread(self._scrape_life)
        # no await from the books to the signal: nothing is sent in between
        at, books = time.monotonic(), self._sent_by_device()
        self.process.send_signal(how)
        if how == signal.SIGKILL:
            # a crash loses what arrived since the last checkpoint reached the outbox: the
            # checkpoint interval, the commit after it, and a tick of slack for both; plus how
            # far the gateway's loop was behind (its last completed tick, which /metrics answers
            # from its own thread): on a busy machine it reads its sockets and checkpoints late
            last_tick = (last or {}).get("scalars", {}).get("last_tick_timestamp_seconds", scraped)
            lag = max(0.0, scraped - last_tick - COMMIT_INTERVAL)
            bound = self.scenario.city.checkpoint + 2 * COMMIT_INTERVAL + 1.0 + lag
            before = [h for h in self._sent_history if h[0] <= at - bound]
            base = before[-1][1] if before else {}
            for device, n in books.items():
                if n - base.get(device, 0):
                    self.outages.unstored[device] += n - base.get(device, 0)
        await asyncio.to_thread(self.process.wait, self.options.stop_timeout)
        await asyncio.to_thread(self._log_copier.join, 10.0)
        self._earlier_lives.append(last if last is not None else {})
        self._down_since = (at, books)
        self.outages.intervals.append({"signal": how.name, "exit_code": self.process.returncode,
                                       "exit_seconds": round(time.monotonic() - at, 2)})
        return time.monotonic() - at

    async def start_gateway_again(self) -> float:
        """Start the gateway on the same config and state; once it listens on every port of the
        city (its /metrics, the LoRaWAN UDP ports, the OCPP port, the serial ptys open), the down
        interval ends: what the devices sent in it is `gateway_down`. Returns its length."""
        assert self._down_since is not None
        env = dict(os.environ)
        if self._bus:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = self._bus
        self._spawn(self._gateway_command(self._config_path), env)
        await self._wait_gateway()
        assert self.process is not None
        await self._wait_listening(self.process.pid)
        at, books = time.monotonic(), self._sent_by_device()
        since, before = self._down_since
        self._down_since = None
        for device, n in books.items():
            # a charge point holds its call until the gateway answers and sends it again after
            # reconnecting: being down loses none of its readings
            if n - before.get(device, 0) and not self.ocpp.owns(device):
                self.outages.gateway_down[device] += n - before.get(device, 0)
        self.outages.intervals[-1]["down_seconds"] = round(at - since, 2)
        return at - since

    async def _wait_listening(self, pid: int, within: float = 30.0) -> None:
        if self.serial.ports:
            await self.serial.hold_until_open(pid)
        udp = set(self._ports.get("udp", {}).values())
        tcp = {self._ports["ocpp"]} if self.ocpp.groups and any(g.count for g in self.ocpp.groups) else set()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if udp <= _bound_udp_ports() and all([await asyncio.to_thread(_accepts, port) for port in tcp]):
                return
            await asyncio.sleep(0.05)  # poll step while the drivers start
        raise RuntimeError(f"the restarted gateway did not listen on UDP {sorted(udp)} / TCP {sorted(tcp)}")

    # -------------------------------------------------------------- the run

    def _sent_so_far(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for group in self.groups:
            with contextlib.suppress(Exception):
                for device, n in group.sent().items():
                    label = group.label(device)
                    out[label] = out.get(label, 0) + n
        return out

    def _progress_table(self, elapsed: float, active: list[_Active]) -> Any:
        from rich.table import Table

        s = self.scenario
        table = Table(title=f"city {s.city.name!r} x{self.scale:g}: {s.climate_sensors():,} climate sensors, "
                      f"{s.charge_point_count():,} charge points  [{elapsed:5.1f} / {s.city.duration:g} s]")
        table.add_column("protocol")
        table.add_column("readings sent", justify="right")
        for label, n in sorted(self._sent_so_far().items()):
            table.add_row(label, f"{n:,}")
        m = self.metrics
        table.add_row("gateway in", f"{sum(m.get('readings', {}).values()):,}")
        scal = m.get("scalars", {})
        table.add_row("outbox batches", f"{int(scal.get('outbox_batches', 0)):,}")
        table.add_row("platform covered", f"{sum(w.count for w in list(self.books.ledger.windows.values())):,}")
        table.add_row("faults active", ", ".join(a.injection.kind for a in active) or "-")
        return table

    async def _main_phase(self) -> None:
        s = self.scenario
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.sent_before_main = sum(self._sent_so_far().values())  # start-up: joins, charge point boots
        self._steady_begin = self._mark(await asyncio.to_thread(self._scrape))
        pending = list(self.injections)
        active: list[_Active] = []
        live: Any = None
        if self.options.progress:
            try:
                from rich.live import Live
            except ImportError:
                print("no live display: install the simulators' extra, pip install 'edge-gateway[sim]'")
            else:
                live = Live(self._progress_table(0, active), refresh_per_second=2, transient=False)
                live.start()
        last_scrape = 0.0
        try:
            while (elapsed := loop.time() - t0) < s.city.duration:
                if any(i.needs_send_history for i in self.injections):
                    now = time.monotonic()
                    self._sent_history = [h for h in self._sent_history if h[0] > now - 30.0]
                    self._sent_history.append((now, self._sent_by_device()))
                while pending and pending[0].fault.at <= elapsed:
                    begun = await self._begin(pending.pop(0))
                    if begun.ends is not None:  # one-shot faults (stall, disconnect, clock step) are done
                        active.append(begun)
                for item in [a for a in active if a.ends is not None and loop.time() >= a.ends]:
                    await item.injection.end(self)
                    active.remove(item)
                if self.tail is not None:
                    await asyncio.to_thread(self.tail.poll)
                if loop.time() - last_scrape >= 2.0:
                    last_scrape = loop.time()
                    scraped = await asyncio.to_thread(self._scrape)
                    self.metrics = scraped if scraped is not None else self.metrics
                if live is not None:
                    live.update(self._progress_table(elapsed, active))
                await asyncio.sleep(0.25)  # the runner's own tick (faults, progress, file tail)
        finally:
            for item in active:  # faults still running when the devices stop end now
                await item.injection.end(self)
            if live is not None:
                live.stop()
        self.sending_seconds = loop.time() - t0

    async def _settle(self) -> None:
        """Senders stopped: wait until the gateway has taken everything in flight (its reading
        count stands still for 1.5 s)."""
        deadline = time.monotonic() + self.options.settle_timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            m = await asyncio.to_thread(self._scrape)
            if m is not None:
                self.metrics = m
                count = sum(m["readings"].values())
                if count != last:
                    last, since = count, time.monotonic()
                elif time.monotonic() - since >= 1.5:
                    return
            await asyncio.sleep(0.25)  # poll step

    async def _stop_gateway(self) -> None:
        assert self.process is not None
        self.lora.read_kernel_drops()
        self.process.send_signal(signal.SIGTERM)
        try:
            usage = await asyncio.to_thread(_reap, self.process, self.options.stop_timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            usage = await asyncio.to_thread(_reap, self.process, None)
        # the whole life of the process (start-up, boot storm, run, drain) from its rusage:
        # ru_oublock is its write_bytes (/proc/<pid>/io) in 512-byte units (Linux getrusage(2))
        self.proc = ProcStats(usage.ru_utime + usage.ru_stime, time.monotonic() - self._proc_started,
                              usage.ru_maxrss / 1024, usage.ru_oublock * 512)
        await asyncio.to_thread(self._log_copier.join, 10.0)
        text = (self.options.workdir / "gateway.log").read_text(errors="replace")
        start = text.rfind("edge-gateway run summary")
        self.gateway_summary = text[start:].strip() if start >= 0 else ""

    async def _collect(self) -> None:
        """Everything the gateway delivered reaches the books: as many distinct batches as the
        gateway's summary says it forwarded (a loaded receiver may be minutes behind the broker,
        which holds the rest in the receiver's session), or nothing new for 10 s."""
        if self.tail is not None:
            await asyncio.to_thread(self.tail.poll)
            return
        match = re.search(r"forwarded\s+\S+: (\d+) batches", self.gateway_summary)
        # a restarted gateway's summary counts its own process only
        forwarded = int(match.group(1)) if match and not self._earlier_lives else None
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            count = self.books.ledger.messages
            if forwarded is not None and len(self.books.ledger.batch_ids) >= forwarded:
                break
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= (10.0 if forwarded is not None else 1.0):
                break
            await asyncio.sleep(0.2)  # poll step

    async def run(self) -> dict[str, Any]:
        try:
            await self.start()
            await self._main_phase()
            at_stop = await asyncio.to_thread(self._scrape)
            self.metrics_at_stop = at_stop if at_stop is not None else self.metrics
            self._steady_end = self._mark(self.metrics_at_stop)
            if self.tail is not None:
                await asyncio.to_thread(self.tail.poll)
            self.books.measuring = False
            for group in self.groups:
                await group.stop_sending()
            await self._settle()
            await self._stop_gateway()
            await self._collect()
            evictions = self._eviction_losses()
        finally:
            await self.close()
        report = build_report(
            scenario_name=self.scenario.city.name, scale=self.scale, groups=self.groups, books=self.books,
            metrics=self.metrics, gateway_summary=self.gateway_summary, metrics_at_stop=self.metrics_at_stop,
            extra={"faults": self.faults_done, "run": self._run_facts()},
            udp_drops=self.lora.kernel_drops, evictions=evictions, outages=self.outages,
            withhold=self.options.withhold,
        )
        path = self.options.report_path or self.options.workdir / "report.json"
        write_report(report, path)
        report["report_path"] = str(path)
        return report

    def _eviction_losses(self) -> Any:
        """What the evicted batches covered, per seq and device (simulators.city.attribution),
        from the stopped gateway's outbox and its record of stored batches."""
        stream, ranges = read_evicted_ranges(self.state_dir / "outbox.sqlite")
        stored = read_stored_batches(self.stored_log).get(stream, {})
        covered = {(device, metric, start): window.count
                   for (_gateway, device, metric, start), window in list(self.books.ledger.windows.items())}
        from simulators.city.fleet import DERIVED_METRICS

        return eviction_losses(stored, ranges, covered, skip_metrics=DERIVED_METRICS)

    def _run_facts(self) -> dict[str, Any]:
        m = self.metrics
        readings_in = sum(m.get("readings", {}).values())
        p50, p99 = self.books.percentile(0.5), self.books.percentile(0.99)
        nominal = sum(group.nominal_rate() for group in self.groups)
        return {
            "sending_seconds": round(self.sending_seconds, 2),
            # what the scenario should produce: the readings sent at start-up plus the devices'
            # nominal rates over the time they reported
            "readings_expected": round(self.sent_before_main + nominal * self.sending_seconds),
            "nominal_readings_per_second": round(nominal, 1),
            "readings_sent_before_devices_report": self.sent_before_main,
            "uplink": {"wire_bytes": self.books.wire_bytes, "records_received": self.books.records_received},
            "climate_sensors": self.scenario.climate_sensors(),
            "charge_points": self.scenario.charge_point_count(),
            "charge_points_booted": self.ocpp.booted,
            "ocpp_drops": self.ocpp.drops,
            "ocpp_reconnects": self.ocpp.reconnects,
            "ocpp_errors": dict(self.ocpp.errors),
            "ocpp_processes": self.ocpp.proc_facts(),
            "modbus_answers_corrupted_and_retried": self.serial.retried(),
            "udp_datagrams_dropped_by_kernel": self.lora.kernel_drops,
            "ble_bus_watch": self.ble.watch_facts(),
            "simulator_worst_lag_s": round(max(g.pace.worst_lag for g in self.groups), 3),
            "gateway_process": {
                "cpu_seconds": round(self.proc.cpu_seconds, 3),
                "wall_seconds": round(self.proc.wall_seconds, 3),
                "cpu_share": round(self.proc.cpu_seconds / self.proc.wall_seconds, 4) if self.proc.wall_seconds else None,
                "peak_rss_mib": round(self.proc.peak_rss_mib, 1),
                "write_bytes": self.proc.write_bytes,
                "write_bytes_per_reading": round(self.proc.write_bytes / readings_in, 1) if readings_in else None,
                "readings_in": readings_in,
            },
            "gateway_steady": self._steady(),
            "latency_s": {"p50": None if p50 is None else round(p50, 3), "p99": None if p99 is None else round(p99, 3),
                          "basis": "batch arrival at the platform minus window end"},
        }

    async def close(self) -> None:
        for group in self.groups:
            with contextlib.suppress(Exception):
                await group.stop_sending()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        for group in reversed(self.groups):
            with contextlib.suppress(Exception):
                await group.close()
        if self.receiver is not None:
            with contextlib.suppress(Exception):
                await self.receiver.stop()
        for broker in (self.platform, self.ns_broker):
            if broker is not None:
                await asyncio.to_thread(broker.stop)
        for injection in self.injections:
            with contextlib.suppress(Exception):
                await injection.cleanup(self)


LIFE_COUNTERS = ("late_dropped", "future_dropped", "unknown_metric_dropped", "windows_revised", "late_accepted",
                 "clock_jumps")


def _over_lives(earlier: list[dict[str, Any]], current: dict[str, Any]) -> dict[str, Any]:
    """/metrics of the current gateway process with the counters of the earlier ones added: a
    restarted process counts from zero (the outbox's eviction counters excepted: they are
    restored from its database, so they are taken as they are)."""
    if not earlier:
        return current
    out = {family: dict(values) for family, values in current.items()}
    for life in earlier:
        for family in ("decode_errors", "readings", "driver_events"):
            for key, n in life.get(family, {}).items():
                out[family][key] = out[family].get(key, 0) + n
        for key in LIFE_COUNTERS:
            if key in life.get("scalars", {}):
                out["scalars"][key] = out["scalars"].get(key, 0) + life["scalars"][key]
    return out


def _bound_udp_ports() -> set[int]:
    """Local UDP ports some socket on this machine is bound to (/proc/net/udp, proc(5))."""
    ports = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            local = line.split()[1]
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> Any:
    """Linux: the gateway gets SIGTERM when the runner dies (prctl(2) PR_SET_PDEATHSIG), so a run
    that crashes never leaves a gateway behind that keeps reopening its pty links: pty numbers are
    recycled, and such an orphan locks (flock) and reads the ptys of later runs on the machine.
    The signal follows the thread that forks: `_spawn` runs on the runner's main thread."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before the fork
    except (OSError, AttributeError):
        return None
    parent_death_signal = 1  # PR_SET_PDEATHSIG, linux/prctl.h

    def set_parent_death_signal() -> None:
        prctl(parent_death_signal, int(signal.SIGTERM), 0, 0, 0)

    return set_parent_death_signal


def _copy_log(source: Any, path: Path, append: bool = False) -> None:
    """Copy the gateway's output into its log file until the gateway closes it (a restarted
    gateway's output is appended)."""
    with open(path, "ab" if append else "wb") as log:
        while chunk := source.read1(65536):
            log.write(chunk)
            log.flush()


def _reap(process: subprocess.Popen[bytes], timeout: float | None) -> Any:
    """Wait for the gateway to exit and return its resource usage (os.wait4)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG if deadline is not None else 0)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if deadline is not None and time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(process.args, timeout or 0.0)
        time.sleep(0.05)  # poll step while the gateway drains


def _make_receiver(port: int, books: BatchBooks, *, ack: bool = False) -> Any:
    """The platform receiver, feeding the city's books (its ledger plus latency samples)."""
    from simulators.platform.receiver import PlatformReceiver

    class CityReceiver(PlatformReceiver):  # type: ignore[misc, valid-type]
        def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
            super()._on_message(client, userdata, message)
            if not message.topic.endswith("/status"):
                books.wire_bytes += len(message.payload)
            if message.topic.endswith("/batch"):
                books.note_latency(message.payload, time.time())

    receiver = CityReceiver("127.0.0.1", port, prefix="city", protocol="5", client_id="city-platform",
                            session_expiry=3600, ack=ack)
    receiver.ledger = books.ledger
    return receiver


def print_report(report: dict[str, Any]) -> None:
    lines = [render_report(report)]
    run = report["run"]
    gp = run["gateway_process"]
    lines.append(f"  gateway: {gp['readings_in']:,} readings in {run['sending_seconds']:g} s, CPU {gp['cpu_seconds']:.2f} s "
                 f"({(gp['cpu_share'] or 0) * 100:.1f} % of one core), peak RSS {gp['peak_rss_mib']:.1f} MiB, "
                 f"latency p50/p99 {run['latency_s']['p50']}/{run['latency_s']['p99']} s")
    steady = run.get("gateway_steady") or {}
    if steady:
        lines.append(f"  while reporting: {steady['readings_per_second']} readings/s, gateway CPU "
                     f"{(steady['cpu_share'] or 0) * 100:.1f} % of one core, "
                     f"{steady['write_bytes_per_reading']} bytes written/reading")
    summary = chain(report.get("gateway", {}).get("summary", ""))
    if summary:
        lines.append(summary)
    lines.append(f"  report written to {report['report_path']}")
    print(fit(lines))
