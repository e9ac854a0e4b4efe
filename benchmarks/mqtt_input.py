"""CPU per message of the MQTT input (the subscriber drivers use) against bare clients.

    .venv/bin/python -m benchmarks.mqtt_input [--count 20000] [--rounds 3] [--qos 1]

Each subject runs in its own process, subscribed to a private Mosquitto; the parent publishes
`count` network-server uplinks (ChirpStack v4 JSON, ~600 bytes) at the given QoS and the child
reports its own CPU seconds (time.process_time) from the first message to the last, so start-up
and connection are not counted. Subjects are interleaved round by round; the best round counts.

Subjects:
- `gateway`: gateway.mqtt.subscriber.MqttSubscriber (gmqtt underneath; persistent session).
- `gmqtt`: a bare gmqtt client whose callback only counts (the library's floor).
- `paho`: a bare paho-mqtt client on its network thread, callback only counts.
- `handwritten`: drivers.lorawan.transport.MqttSubscriber, when that module still has it (the
  hand-written MQTT 3.1.1 client the gateway had before gateway.mqtt).

The ratio printed is each subject's CPU per message over the baseline's (`--baseline`, default
`gmqtt`): > 1 costs more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.mosquitto import Broker

TOPIC = "application/bench/device/{eui}/event/up"
SUBJECTS = ("gateway", "gmqtt", "paho", "handwritten")


def _uplink(n: int) -> bytes:
    eui = f"a84041{n % 4096:010x}"
    return json.dumps({
        "deduplicationId": f"3ac7e3c4-4401-4b8d-9386-a5c902f9{n % 65536:04x}",
        "time": "2026-01-01T00:00:00.000000+00:00",
        "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "city",
                       "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
                       "applicationName": "climate", "deviceProfileName": "lht65",
                       "deviceName": f"sensor-{n % 4096}", "devEui": eui},
        "devAddr": "00189440", "adr": True, "dr": 5, "fCnt": n, "fPort": 2, "confirmed": False,
        "data": "y6QHtwFnAX/z",
        "rxInfo": [{"gatewayId": "0016c001ff10a235", "uplinkId": n, "rssi": -57, "snr": 10.5,
                    "location": {}, "context": "EFwMtA=="}],
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {
            "bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}},
    }).encode()


# ------------------------------------------------------------------ child: one subject


class _Counter:
    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.first_cpu = 0.0
        self.done = threading.Event()
        self.last_cpu = 0.0

    def hit(self) -> None:
        if self.seen == 0:
            self.first_cpu = time.process_time()
        self.seen += 1
        if self.seen == self.count:
            self.last_cpu = time.process_time()
            self.done.set()


async def _run_async(subject: str, port: int, qos: int, counter: _Counter) -> None:
    topic = "application/+/device/+/event/up"
    if subject == "gateway":
        from gateway.mqtt.subscriber import MqttSubscriber, SubscriberSettings

        gw = MqttSubscriber(SubscriberSettings(host="127.0.0.1", port=port, topics=[topic],
                                               client_id="bench-gateway", qos=qos),
                            lambda t, p: counter.hit())
        await gw.start()
        await gw.subscribed.wait()
        stop: Any = gw.stop
    elif subject == "handwritten":
        from drivers.lorawan import transport

        hand = transport.MqttSubscriber(  # type: ignore[attr-defined]
            host="127.0.0.1", port=port, topics=[topic], qos=qos, client_id="bench-hand",
            username="", password="", on_message=lambda t, p: counter.hit())
        await hand.start()
        await hand.subscribed.wait()
        stop = hand.stop
    else:
        import gmqtt

        client = gmqtt.Client("bench-gmqtt")
        subscribed = asyncio.Event()
        client.on_message = lambda c, t, p, q, props: counter.hit()
        client.on_subscribe = lambda *a: subscribed.set()
        await client.connect("127.0.0.1", port, version=gmqtt.constants.MQTTv311)
        client.subscribe(topic, qos=qos)
        await subscribed.wait()
        stop = client.disconnect
    print("subscribed", flush=True)
    await asyncio.to_thread(counter.done.wait)  # set from the callback (paho's is a thread)
    await stop()


def _run_paho(port: int, qos: int, counter: _Counter) -> None:
    subscribed = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-paho")
    client.on_message = lambda c, u, m: counter.hit()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe("application/+/device/+/event/up", qos=qos)
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.wait(10)
    print("subscribed", flush=True)
    counter.done.wait()
    client.disconnect()
    client.loop_stop()


def child(subject: str, port: int, qos: int, count: int) -> None:
    counter = _Counter(count)
    if subject == "paho":
        _run_paho(port, qos, counter)
    else:
        asyncio.run(_run_async(subject, port, qos, counter))
    print(f"cpu {counter.last_cpu - counter.first_cpu:.6f}", flush=True)


# ------------------------------------------------------------------ parent


def _available(subject: str) -> bool:
    if subject != "handwritten":
        return True
    from drivers.lorawan import transport

    return hasattr(transport, "MqttSubscriber")


def _one(subject: str, broker: Broker, payloads: list[bytes], qos: int) -> float:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mqtt_input", "--child", subject, "--port",
         str(broker.port), "--qos", str(qos), "--count", str(len(payloads))],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "subscribed":
        raise RuntimeError(f"{subject}: {line!r}")
    publisher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    publisher.max_inflight_messages_set(1000)
    publisher.max_queued_messages_set(0)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    last = None
    for i, payload in enumerate(payloads):
        last = publisher.publish(TOPIC.format(eui=f"{i % 4096:016x}"), payload, qos=qos)
    assert last is not None
    last.wait_for_publish(120)
    out = process.stdout.readline()
    process.wait(60)
    publisher.disconnect()
    publisher.loop_stop()
    if not out.startswith("cpu "):
        raise RuntimeError(f"{subject}: {out!r}")
    return float(out.split()[1]) / (len(payloads) - 1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mqtt_input")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--baseline", choices=SUBJECTS, default="gmqtt")
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--child", choices=SUBJECTS)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.port, args.qos, args.count)
        return 0
    subjects = [s for s in args.subjects.split(",") if _available(s)]
    payloads = [_uplink(i) for i in range(args.count)]
    results: dict[str, list[float]] = {s: [] for s in subjects}
    with tempfile.TemporaryDirectory() as workdir:
        broker = Broker(workdir=Path(workdir)).start()
        try:
            for _ in range(args.rounds):
                for subject in subjects:
                    results[subject].append(_one(subject, broker, payloads, args.qos))
        finally:
            broker.stop()
    base = min(results[args.baseline]) if args.baseline in results else min(results[subjects[0]])
    print(f"MQTT input, QoS {args.qos}, {args.count} messages of ~{len(payloads[0])} bytes, "
          f"{args.rounds} rounds (CPU microseconds per message, best / median; ratio of best "
          f"to {args.baseline})")
    for subject in subjects:
        best, median = min(results[subject]), statistics.median(results[subject])
        print(f"  {subject:<12} {best * 1e6:8.1f} / {median * 1e6:8.1f} us   x{best / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
