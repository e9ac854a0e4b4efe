"""Readings per second from the replay driver through windows, outbox and MQTT to the platform
receiver via a private Mosquitto; baseline: a bare paho-mqtt loop publishing the same bytes.

    .venv/bin/python -m benchmarks.uplink [--readings 300000] [--devices 500]

Subject: the real gateway as a subprocess (`python -m gateway.cli run`), replay driver at full
speed (speed = 0), 1 s windows, MQTT uplink at QoS 1 with PUBACKs awaited. Timed from the
process start until the receiver's books cover every reading (so it includes start-up, the last
window's grace and a drain at SIGTERM); CPU seconds and peak RSS are the gateway process's own,
from wait4().

Baseline, same run: the payloads the receiver got are published again by one bare paho client
(QoS 1, its own network thread, every PUBACK awaited) to a bare subscriber; its rate is counted in
the same readings those payloads cover. The ratio says what windows, outbox and uplink cost on
top of only moving the bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.peer_support.proc import peak_rss_mib as peak_rss_of
from benchmarks.report import Measurement, print_ratio
from gateway.batch import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Batch,
    BatchDocument,
    WindowRecord,
    encode_document,
)
from simulators.platform.receiver import PlatformReceiver  # the package exports it untyped
from tests.support.mosquitto import Broker
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[1]


def _small_payloads(count: int) -> list[bytes]:
    start = int(time.time()) // 60 * 60
    return [encode_document(BatchDocument(
        schema=SCHEMA_NAME, version=SCHEMA_VERSION, gateway="gw-bench", stream="bench", seq=i + 1,
        batch_id=f"bench-{i}", created=time.time(),
        windows=[WindowRecord(device=f"lora:{i:016x}", metric="temperature", unit="Cel",
                              kind="gauge", start=start, window=60, count=12, min=1.0, max=2.0,
                              mean=1.5, last=2.0)],
    )) for i in range(count)]


def write_recording(path: Path, readings: int, devices: int) -> int:
    metrics = ("temperature", "humidity")
    per_step = devices * len(metrics)
    steps = max(1, readings // per_step)
    with path.open("w") as out:
        for step in range(steps):
            ts = 1_700_000_000.0 + step
            for d in range(devices):
                for n, metric in enumerate(metrics):
                    value = 10.0 + (step * 7 + d) % 50 * 0.5 + n * 30
                    out.write(f'{{"device":"lora:{d:016x}","metric":"{metric}","value":{value},"ts":{ts}}}\n')
    return steps * per_step


def write_config(workdir: Path, recording: Path, broker: Broker, metrics_port: int) -> Path:
    path = workdir / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "gw-bench"
state_dir = "{workdir / 'state'}"
[windows]
window = 1
grace = 0.2
[outbox]
batch_max_records = 500
commit_interval = 0.2
[health]
listen = "127.0.0.1:{metrics_port}"
[log]
format = "json"
level = "warning"
[[drivers]]
type = "replay"
path = "{recording}"
speed = 0
[[uplinks]]
type = "mqtt"
host = "127.0.0.1"
port = {broker.port}
require_subscriber = true
""")
    return path


class Collector:
    """A bare subscriber keeping every payload (for the baseline) and counting arrivals."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.payloads: list[bytes | bytearray] = []  # paho hands either
        self.arrived = threading.Event()
        self.expected = -1
        self.ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("collector not subscribed")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.payloads.append(msg.payload)
        if len(self.payloads) == self.expected:
            self.arrived.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_gateway(config: Path, receiver: PlatformReceiver, readings: int,
                timeout: float) -> tuple[Measurement, float]:
    wall0 = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--drain"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while receiver.ledger.readings_covered() < readings:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"gateway did not deliver {readings} readings in time:\n{stderr[-3000:]}")
        time.sleep(0.01)  # poll step while waiting for the receiver's books
    wall = time.perf_counter() - wall0
    # VmHWM of the gateway itself: wait4's ru_maxrss can report the benchmark's own size,
    # inherited at fork, when that is larger
    peak_rss = peak_rss_of(process.pid)
    process.terminate()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Measurement("gateway: replay->MQTT->receiver", readings, wall, cpu), peak_rss


def run_baseline(broker: Broker, payloads: list[bytes | bytearray], readings: int) -> Measurement:
    """One bare paho client publishes every payload at QoS 1 and waits for all PUBACKs (paho
    keeps at most 20 in flight, its default) and for the subscriber to have them all."""
    collector = Collector(broker, "bare/batch")
    collector.expected = len(payloads)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    infos = [client.publish("bare/batch", payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(30)
    if not collector.arrived.wait(30):
        raise RuntimeError("baseline subscriber did not get every payload")
    measurement = Measurement("bare paho publish, same bytes", readings,
                              time.perf_counter() - wall0, time.process_time() - cpu0)
    client.disconnect()
    client.loop_stop()
    collector.close()
    return measurement


async def _uplink_sends(broker: Broker, batches: list[Batch], in_flight: int) -> float:
    from gateway.uplinks.base import UplinkContext
    from gateway.uplinks.mqtt import Config, load_uplink

    uplink = load_uplink()(Config(host=broker.host, port=broker.port, max_in_flight=in_flight),
                           UplinkContext("mqtt", gateway_id="gw-bench", state_dir="/tmp"))
    await uplink.start()
    gate = asyncio.Semaphore(in_flight)

    async def send(batch: Batch) -> None:
        async with gate:
            await uplink.send(batch)

    wall0 = time.perf_counter()
    await asyncio.gather(*(send(b) for b in batches))
    wall = time.perf_counter() - wall0
    await uplink.stop()
    return wall


def run_uplink_only(broker: Broker, batches: list[Batch], in_flight: int) -> Measurement:
    """The MQTT uplink's send path alone: start, then every batch sent with at most `in_flight`
    awaiting their PUBACK (what the runner does), to a bare subscriber."""
    collector = Collector(broker, "edge/+/batch")
    collector.expected = len(batches)
    cpu0 = time.process_time()
    wall = asyncio.run(_uplink_sends(broker, batches, in_flight))
    if not collector.arrived.wait(30):
        raise RuntimeError("subscriber did not get every batch")
    collector.close()
    records = sum(b.records for b in batches)
    return Measurement(f"MqttUplink.send, {in_flight} in flight", records, wall,
                       time.process_time() - cpu0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.uplink", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=600_000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--batches", type=int, default=3000,
                        help="small batches for the uplink-only comparison (best of 3 runs)")
    parser.add_argument("--timeout", type=float, default=50.0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-uplink-") as tmp:
        workdir = Path(tmp)
        (workdir / "broker").mkdir()
        broker = Broker(workdir=workdir / "broker").start()
        try:
            readings = write_recording(workdir / "readings.jsonl", args.readings, args.devices)
            receiver = PlatformReceiver(broker.host, broker.port)
            receiver.start_sync()
            collector = Collector(broker, "edge/+/batch")
            config = write_config(workdir, workdir / "readings.jsonl", broker, free_port())
            subject, gateway_rss = run_gateway(config, receiver, readings, args.timeout)
            report = receiver.report()
            receiver.stop_sync()
            collector.close()
            baseline = run_baseline(broker, list(collector.payloads), readings)
            # The uplink alone, on many small batches, against bare paho with the same bytes.
            batches = [Batch(seq=i + 1, kind="windows", payload=p, records=1)
                       for i, p in enumerate(_small_payloads(args.batches))]
            # best of 3 each, alternating, so a noisy neighbour does not decide the ratio
            runs = [(run_uplink_only(broker, batches, 20),
                     run_baseline(broker, [b.payload for b in batches], len(batches)))
                    for _ in range(3)]
            uplink_only = min((r[0] for r in runs), key=lambda m: m.wall_seconds)
            bare_small = min((r[1] for r in runs), key=lambda m: m.wall_seconds)
        finally:
            broker.stop()
    print(f"readings {readings:,} from {args.devices} devices x 2 metrics; "
          f"{report['batches']} batches, {report['window_records']:,} window records, "
          f"{report['bytes'] / 1e6:.2f} MB of payload; gaps {report['gaps'] or 'none'}, "
          f"duplicate batches {report['duplicates']['batches']}")
    print_ratio("uplink: readings/s end to end (gateway process) vs bare paho, same bytes",
                subject, baseline, "readings/s")
    print(f"  gateway process: {subject.cpu_seconds:.2f} s CPU, peak RSS {gateway_rss:.1f} MiB"
          f" (benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB)")
    bare_small.name = "bare paho publish, same bytes"
    print_ratio("uplink send path alone: batches/s (1 window each, PUBACK awaited) vs bare paho",
                uplink_only, bare_small, "batches/s")
    print(json.dumps({"readings": readings, "gateway_rate": round(subject.rate),
                      "baseline_rate": round(baseline.rate),
                      "gateway_cpu_s": round(subject.cpu_seconds, 2),
                      "gateway_peak_rss_mib": round(gateway_rss, 1),
                      "uplink_batches_per_s": round(uplink_only.rate),
                      "bare_batches_per_s": round(bare_small.rate)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
