"""edge-gateway against ThingsBoard IoT Gateway on the same work: readings per CPU second.

    .venv/bin/python -m benchmarks.peer [--readings 30000] [--devices 100] [--skip-peer]

The work (ThingsBoard IoT Gateway's MQTT-connector path): N ChirpStack v4 uplink events, each
with a decoded object holding a temperature and a humidity, are published at QoS 1 to an input
Mosquitto on loopback, and the gateway forwards them upstream to a second Mosquitto on loopback
(two broker processes: the network server's broker and the platform's).

- edge-gateway (`python -m gateway.cli run --drain`, a subprocess): lorawan driver in
  network-server mode, 1 s event-time windows, the SQLite outbox, the MQTT uplink. Done when the
  window records at the upstream receiver cover every reading (sum of `count`).
- ThingsBoard IoT Gateway 3.8.x (a subprocess in its own venv, created on first run): its MQTT
  connector with a JSON converter mapping the same fields (device from deviceInfo.devEui, event
  time from `time`, temperature and humidity from `object`), memory storage (its default), its
  ThingsBoard connection to the upstream broker where a fake ThingsBoard answers getSessionLimits
  and attribute requests. Its update check is disabled before it starts (see
  peer_support/tb_launcher.py). Done when its v1/gateway/telemetry messages carry every value.

Both start, then a probe device's uplinks are sent until the probe comes out upstream (so the
whole path is up); the clock and the CPU counters (/proc/<pid>/stat, all threads) start at the
first measured publish and stop when the upstream books cover every reading. Peak RSS is the
process's VmHWM just before it is stopped. The ratio is edge-gateway's readings per CPU second over
ThingsBoard IoT Gateway's (target from issue 8: at least 20).

Two floors run in the same session on the same uplinks: a bare paho-mqtt subscriber and a bare
asyncio MQTT subscriber, each only receiving and acknowledging. They show what the MQTT receive
path alone costs (see peer_support/bare_subscriber.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.peer_support.edge import edge_command, edge_config
from benchmarks.peer_support.proc import cpu_seconds, peak_rss_mib, thread_cpu_seconds
from benchmarks.peer_support.thingsboard import (
    INPUT_TOPIC_FILTER,
    PeerVenv,
    default_venv_path,
    ensure_venv,
    launch_command,
    launch_env,
    write_config,
)
from benchmarks.peer_support.upstream import EdgeReceiver, FakeThingsBoard
from benchmarks.peer_support.workload import PROBE_EUI, dev_eui, uplink, uplink_topic
from benchmarks.report import Measurement
from tests.support.mosquitto import Broker

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 20.0


@dataclass
class Outcome:
    name: str
    measurement: Measurement | None = None
    total_cpu: float = 0.0  # whole process life: start-up, probe, work, shutdown
    peak_rss_mib: float = 0.0
    startup_seconds: float = 0.0
    main_thread_cpu: float = 0.0  # of the measured CPU seconds, the main thread's
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def per_cpu_second(self) -> float:
        m = self.measurement
        if m is None:
            return 0.0
        return m.count / m.cpu_seconds if m.cpu_seconds > 0 else float("inf")


class Publisher:
    """The network server's side: one paho client publishing uplink events at QoS 1."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id="peer-bench-network-server", protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.client.connect(broker.host, broker.port, keepalive=60)
        self.client.loop_start()
        self.probes = 0

    def probe(self) -> None:
        self.probes += 1
        self.client.publish(uplink_topic(PROBE_EUI),
                            uplink(PROBE_EUI, self.probes, time.time(), 20.0, 50.0), qos=1)

    def publish(self, count: int, devices: int, rate: float) -> None:
        """`count` uplinks round-robin over `devices` sensors, event time = now; at most `rate`
        per second when rate > 0 (else as fast as paho queues them)."""
        start = time.perf_counter()
        for i in range(count):
            eui = dev_eui(i % devices)
            temperature = 15.0 + (i * 7 % 200) / 10.0
            humidity = 40.0 + (i * 13 % 400) / 10.0
            self.client.publish(uplink_topic(eui), uplink(eui, i // devices, time.time(), temperature, humidity),
                                qos=1)
            if rate > 0 and i % 100 == 99:
                ahead = (i + 1) / rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the offered load, not synchronisation

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stop_process(process: subprocess.Popen[bytes], sig: int | None, grace: float) -> float:
    """Signal (unless None), wait up to `grace`, kill if needed; lifetime CPU seconds. (wait4's
    ru_maxrss is not used for memory: on Linux it keeps the pre-exec high-water mark, i.e. this
    benchmark's own size at fork time; /proc/<pid>/status VmHWM is the gateway's.)"""
    if sig is not None and process.poll() is None:
        process.send_signal(sig)
    deadline = time.monotonic() + grace
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.05)  # poll step while the process shuts down
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def measure_gateway(
    name: str,
    workdir: Path,
    start: Callable[[Broker, Broker, Path], subprocess.Popen[bytes]],
    receiver_factory: Callable[[Broker], EdgeReceiver | FakeThingsBoard],
    stop_signal: int,
    args: argparse.Namespace,
) -> Outcome:
    """One gateway on fresh brokers: start, probe until ready, measure N readings, stop."""
    outcome = Outcome(name)
    (workdir / "input").mkdir(parents=True)
    (workdir / "upstream").mkdir()
    input_broker = Broker(workdir=workdir / "input").start()
    upstream_broker = Broker(workdir=workdir / "upstream").start()
    receiver = receiver_factory(upstream_broker)
    publisher: Publisher | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path = workdir / "gateway.log"
    try:
        receiver.start()
        t0 = time.perf_counter()
        process = start(input_broker, upstream_broker, log_path)
        publisher = Publisher(input_broker)
        deadline = time.monotonic() + args.startup_timeout
        while not receiver.probe_seen.is_set():
            if process.poll() is not None:
                outcome.error = f"exited with {process.returncode} during start-up:\n{_log_tail(log_path)}"
                return outcome
            if time.monotonic() > deadline:
                outcome.error = (f"the probe did not come out upstream within {args.startup_timeout:.0f} s:\n"
                                 f"{_log_tail(log_path)}")
                return outcome
            publisher.probe()
            receiver.probe_seen.wait(0.5)
        outcome.startup_seconds = time.perf_counter() - t0

        receiver.expect(args.readings)
        threads0 = thread_cpu_seconds(process.pid)
        cpu0, wall0 = cpu_seconds(process.pid), time.perf_counter()
        publisher.publish(args.readings, args.devices, args.rate)
        deadline = time.monotonic() + args.timeout
        while not receiver.done.wait(0.2):
            if process.poll() is not None:
                outcome.error = (f"exited with {process.returncode} after {receiver.covered():,} readings:\n"
                                 f"{_log_tail(log_path)}")
                return outcome
            if time.monotonic() > deadline:
                outcome.error = (f"only {receiver.covered():,} of {args.readings:,} readings arrived upstream "
                                 f"within {args.timeout:.0f} s:\n{_log_tail(log_path)}")
                # its bytes per reading still count: taken over what did arrive
                outcome.detail = {"bytes": receiver.books.bytes, "covered_readings": receiver.covered()}
                return outcome
        wall = time.perf_counter() - wall0
        cpu = cpu_seconds(process.pid) - cpu0
        threads1 = thread_cpu_seconds(process.pid)
        outcome.measurement = Measurement(name, args.readings, wall, cpu)
        outcome.main_thread_cpu = threads1.get(process.pid, 0.0) - threads0.get(process.pid, 0.0)
        outcome.peak_rss_mib = peak_rss_mib(process.pid)
        with receiver.lock:
            books = receiver.books
            outcome.detail = {k: v for k, v in vars(books).items()
                              if isinstance(v, int | dict) and not k.startswith("_")}
            if isinstance(receiver, FakeThingsBoard):
                outcome.detail["rpc"] = dict(receiver.rpc_methods)
                outcome.detail["topics"] = dict(receiver.seen)
    finally:
        if process is not None:
            if process.poll() is None:
                outcome.peak_rss_mib = peak_rss_mib(process.pid)
            outcome.total_cpu = _stop_process(process, stop_signal, grace=15.0)
            outcome.detail["exit_code"] = process.returncode
            if outcome.main_thread_cpu:
                outcome.detail["main_thread_cpu_s"] = round(outcome.main_thread_cpu, 2)
        if publisher is not None:
            publisher.close()
        receiver.stop()
        input_broker.stop()
        upstream_broker.stop()
    return outcome


def run_floor(workdir: Path, client: str, args: argparse.Namespace) -> Outcome:
    """A bare subscriber receiving the same uplinks (no forwarding): a floor."""
    outcome = Outcome(f"floor: bare {client} subscriber")
    workdir.mkdir(parents=True)
    broker = Broker(workdir=workdir).start()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.peer_support.bare_subscriber", "--client", client,
         "--port", str(broker.port),
         "--topic", INPUT_TOPIC_FILTER, "--count", str(args.readings), "--timeout", str(args.timeout)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    publisher: Publisher | None = None
    assert process.stdout is not None and process.stdin is not None
    try:
        line = process.stdout.readline().decode().strip()
        if line != "subscribed":
            outcome.error = f"bare subscriber said {line!r}"
            return outcome
        publisher = Publisher(broker)
        cpu0, wall0 = cpu_seconds(process.pid), time.perf_counter()
        publisher.publish(args.readings, args.devices, args.rate)
        line = process.stdout.readline().decode().strip()
        wall = time.perf_counter() - wall0
        if line != "done":
            outcome.error = f"bare subscriber said {line!r}"
            return outcome
        outcome.measurement = Measurement(outcome.name, args.readings, wall,
                                          cpu_seconds(process.pid) - cpu0)
        outcome.peak_rss_mib = peak_rss_mib(process.pid)
    finally:
        process.stdin.close()
        outcome.total_cpu = _stop_process(process, None, grace=10.0)
        if publisher is not None:
            publisher.close()
        broker.stop()
    return outcome


def run_edge(workdir: Path, args: argparse.Namespace) -> Outcome:
    def start(input_broker: Broker, upstream_broker: Broker, log_path: Path) -> subprocess.Popen[bytes]:
        config = workdir / "gateway.toml"
        config.write_text(edge_config(workdir / "state", input_port=input_broker.port,
                                      upstream_port=upstream_broker.port, window=args.window,
                                      grace=args.grace))
        with log_path.open("wb") as log:
            return subprocess.Popen(edge_command(config), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    return measure_gateway("edge-gateway", workdir, start,
                           lambda broker: EdgeReceiver(broker.host, broker.port),
                           signal.SIGTERM, args)


def run_thingsboard(workdir: Path, venv: PeerVenv, args: argparse.Namespace) -> Outcome:
    def start(input_broker: Broker, upstream_broker: Broker, log_path: Path) -> subprocess.Popen[bytes]:
        config_dir = write_config(workdir / "config", input_port=input_broker.port,
                                  upstream_port=upstream_broker.port,
                                  max_records=max(100_000, 4 * args.readings),
                                  event_time=not args.peer_receive_time)
        with log_path.open("wb") as log:
            return subprocess.Popen(launch_command(venv), cwd=workdir, env=launch_env(config_dir),
                                    stdout=log, stderr=subprocess.STDOUT)

    # SIGINT: the gateway's own stop handler (it installs none for SIGTERM)
    return measure_gateway(f"thingsboard-gateway {venv.version}", workdir, start,
                           lambda broker: FakeThingsBoard(broker.host, broker.port),
                           signal.SIGINT, args)


def _row(outcome: Outcome) -> str:
    m = outcome.measurement
    if m is None:
        return f"  {outcome.name:<32} failed: {outcome.error.splitlines()[0] if outcome.error else '?'}"
    return (f"  {outcome.name:<32} {m.count:>9,} {m.wall_seconds:>9.2f} {m.cpu_seconds:>9.2f} "
            f"{outcome.per_cpu_second:>13,.0f} {m.rate:>11,.0f} {outcome.peak_rss_mib:>9.1f} "
            f"{outcome.total_cpu:>9.2f} {outcome.startup_seconds:>8.1f}")


def report(floors: list[Outcome], edge: Outcome, peer: Outcome | None, peer_note: str,
           args: argparse.Namespace) -> int:
    print(f"== peer: {args.readings:,} ChirpStack v4 uplinks (temperature + humidity each) from "
          f"{args.devices} devices, input broker -> gateway -> upstream broker (two Mosquittos on "
          f"loopback){f', offered at {args.rate:,.0f}/s' if args.rate else ''}")
    print(f"  {'gateway':<32} {'readings':>9} {'wall s':>9} {'CPU s':>9} {'readings/CPU s':>13} "
          f"{'readings/s':>11} {'peak RSS':>9} {'life CPU':>9} {'start s':>8}")
    outcomes = [edge] + ([peer] if peer is not None else [])
    for outcome in [*outcomes, *floors]:
        print(_row(outcome))
    for outcome in [*outcomes, *floors]:
        if outcome.error:
            print(f"  {outcome.name}: {outcome.error}")
        if outcome.detail:
            print(f"  {outcome.name} upstream: {json.dumps(outcome.detail, sort_keys=True)}")
    upstream: dict[str, float] = {}
    for outcome in outcomes:
        sent = outcome.detail.get("bytes")
        readings = outcome.measurement.count if outcome.measurement else outcome.detail.get("covered_readings", 0)
        if isinstance(sent, int) and readings:
            upstream[outcome.name] = sent / readings
            print(f"  {outcome.name} sent {sent:,} payload bytes upstream: "
                  f"{upstream[outcome.name]:.1f} bytes per reading")
    bytes_ratio = None
    if peer is not None and edge.name in upstream and upstream.get(peer.name):
        bytes_ratio = upstream[edge.name] / upstream[peer.name]
        verdict = "meets" if bytes_ratio < 1 / 3 else "misses"
        print(f"  upstream bytes edge-gateway / {peer.name}: {bytes_ratio:.3f} ({verdict} the aim of under 1/3)")
    ratio = None
    if peer is not None and peer.measurement is not None and edge.measurement is not None:
        ratio = edge.per_cpu_second / peer.per_cpu_second if peer.per_cpu_second else float("inf")
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        print(f"  ratio edge-gateway / {peer.name}, readings per CPU second: {ratio:.1f} "
              f"({verdict} the target of {TARGET_RATIO:.0f})")
        wall_ratio = edge.measurement.rate / peer.measurement.rate if peer.measurement.rate else float("inf")
        print(f"  ratio of readings per wall second: {wall_ratio:.2f} (edge-gateway's includes "
              f"its last window's {args.window} s + {args.grace} s grace)")
    else:
        print(f"  no ratio: {peer_note or (peer.error.splitlines()[0] if peer and peer.error else 'peer not run')}")
    for floor in floors:
        if floor.measurement is None or edge.measurement is None or floor.measurement.cpu_seconds <= 0:
            continue
        line = (f"  {floor.name} (receives and acknowledges only): edge-gateway uses "
                f"{edge.measurement.cpu_seconds / floor.measurement.cpu_seconds:.1f} times its CPU")
        if peer is not None and peer.measurement is not None and peer.per_cpu_second:
            line += (f"; it alone would reach {floor.per_cpu_second / peer.per_cpu_second:.1f} times "
                     f"{peer.name}'s readings per CPU second")
        print(line)
    print("  (CPU s and wall s: from the first measured publish until every reading is covered "
          "upstream; life CPU: the whole process including start-up and shutdown; peak RSS in MiB)")
    print(json.dumps({
        "readings": args.readings,
        "edge_readings_per_cpu_s": round(edge.per_cpu_second) if edge.measurement else None,
        "edge_cpu_s": round(edge.measurement.cpu_seconds, 2) if edge.measurement else None,
        "edge_wall_s": round(edge.measurement.wall_seconds, 2) if edge.measurement else None,
        "edge_peak_rss_mib": round(edge.peak_rss_mib, 1),
        "peer": peer.name if peer else None,
        "peer_readings_per_cpu_s": round(peer.per_cpu_second) if peer and peer.measurement else None,
        "peer_cpu_s": round(peer.measurement.cpu_seconds, 2) if peer and peer.measurement else None,
        "peer_wall_s": round(peer.measurement.wall_seconds, 2) if peer and peer.measurement else None,
        "peer_peak_rss_mib": round(peer.peak_rss_mib, 1) if peer else None,
        **{f"floor_{f.name.split()[2]}_readings_per_cpu_s": round(f.per_cpu_second) if f.measurement else None
           for f in floors},
        "ratio": round(ratio, 2) if ratio is not None else None,
        "upstream_bytes_per_reading": {name: round(v, 2) for name, v in upstream.items()},
        "upstream_bytes_ratio": round(bytes_ratio, 4) if bytes_ratio is not None else None,
    }))
    return 0 if edge.measurement is not None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=30_000, help="uplinks (2 values each)")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="offered uplinks per second (0: as fast as the publisher goes)")
    parser.add_argument("--window", type=int, default=1, help="edge-gateway window seconds")
    parser.add_argument("--grace", type=float, default=0.5, help="edge-gateway window grace seconds")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds per gateway for every reading to arrive upstream")
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument("--peer-receive-time", action="store_true",
                        help="ThingsBoard IoT Gateway stamps the receive time instead of parsing the "
                             "uplink's `time` (less work than edge-gateway does)")
    parser.add_argument("--skip-peer", action="store_true", help="measure edge-gateway only")
    parser.add_argument("--peer-venv", type=Path, default=None,
                        help="venv for thingsboard-gateway (default ~/.cache/edge-gateway/peer-venv-tb38 "
                             "or $EDGE_GATEWAY_PEER_VENV); created when missing")
    parser.add_argument("--no-install", action="store_true",
                        help="do not create the peer venv; skip the peer if it is missing")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    args = parser.parse_args(argv)

    venv: PeerVenv | None = None
    peer_note = ""
    if args.skip_peer:
        peer_note = "--skip-peer given"
    else:
        venv, peer_note = ensure_venv(args.peer_venv or default_venv_path(), install=not args.no_install)
        if venv is None:
            print(f"peer: thingsboard-gateway unavailable: {peer_note}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    try:
        floors = [run_floor(workdir / f"floor-{client}", client, args) for client in ("paho", "asyncio")]
        edge = run_edge(workdir / "edge", args)
        peer = run_thingsboard(workdir / "thingsboard", venv, args) if venv is not None else None
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report(floors, edge, peer, peer_note, args)


if __name__ == "__main__":
    sys.exit(main())
