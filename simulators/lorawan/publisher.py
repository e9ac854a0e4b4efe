"""Network-server publisher: uplink events as ChirpStack v4, ChirpStack v3 or The Things
Stack v3 publish them on their MQTT integrations, to a real broker."""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from simulators.lorawan.sensors import VirtualSensor

__all__ = ["NetworkServerPublisher", "uplink_document"]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def uplink_document(fmt: str, sensor: VirtualSensor, fcnt: int, fport: int, payload: bytes,
                    *, rssi: float = -80.0, snr: float = 6.5, with_object: dict[str, Any] | None = None,
                    time_text: str | None = None) -> tuple[str, dict[str, Any]]:
    """(topic, JSON document) of one uplink in the given integration's shape."""
    eui = sensor.eui_hex
    when = time_text or _now_iso()
    data = base64.b64encode(payload).decode()
    if fmt == "chirpstack_v4":
        doc: dict[str, Any] = {
            "deduplicationId": str(uuid.uuid4()),
            "time": when,
            "deviceInfo": {"tenantName": "city", "applicationId": "climate", "applicationName": "climate",
                           "deviceProfileName": sensor.family, "deviceName": eui, "devEui": eui},
            "devAddr": f"{sensor.dev_addr:08x}", "adr": True, "dr": 5, "fCnt": fcnt, "fPort": fport,
            "confirmed": False, "data": data,
            "rxInfo": [{"gatewayId": "aa555a0000000000", "uplinkId": 1, "rssi": rssi, "snr": snr},
                       {"gatewayId": "aa555a0000000001", "uplinkId": 2, "rssi": rssi - 9, "snr": snr - 3}],
            "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7}}},
        }
        if with_object is not None:
            doc["object"] = with_object
        return f"application/climate/device/{eui}/event/up", doc
    if fmt == "chirpstack_v3":
        doc = {
            "applicationID": "1", "applicationName": "climate", "deviceName": eui, "devEUI": eui,
            "rxInfo": [{"gatewayID": "aa555a0000000000", "time": when, "rssi": rssi, "loRaSNR": snr}],
            "txInfo": {"frequency": 868100000, "dr": 5}, "adr": True, "fCnt": fcnt, "fPort": fport, "data": data,
        }
        if with_object is not None:
            doc["objectJSON"] = msgspec.json.encode(with_object).decode()
        return f"application/1/device/{eui}/rx", doc
    if fmt == "tts_v3":
        up: dict[str, Any] = {
            "f_port": fport, "f_cnt": fcnt, "frm_payload": data, "received_at": when,
            "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1", "eui": "AA555A0000000000"},
                             "rssi": rssi, "channel_rssi": rssi, "snr": snr}],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}, "frequency": "868100000"},
        }
        if with_object is not None:
            up["decoded_payload"] = with_object
        doc = {
            "end_device_ids": {"device_id": f"dev-{eui}", "application_ids": {"application_id": "climate"},
                               "dev_eui": eui.upper(), "dev_addr": f"{sensor.dev_addr:08X}"},
            "received_at": when, "uplink_message": up,
        }
        return f"v3/climate@city/devices/dev-{eui}/up", doc
    raise ValueError(f"unknown format {fmt!r}")


@dataclass
class NetworkServerPublisher:
    host: str
    port: int
    sensors: list[VirtualSensor]
    formats: tuple[str, ...] = ("chirpstack_v4", "tts_v3")  # sensor i uses formats[i % len]
    interval: float = 1.0
    rounds: int | None = None
    duration: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"published": 0})
    expected: list[tuple[str, dict[str, float | str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    async def start(self) -> NetworkServerPublisher:
        import paho.mqtt.client as mqtt

        # CallbackAPIVersion lives in paho.mqtt.enums; paho.mqtt.client re-exports it implicitly
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)  # type: ignore[attr-defined]
        await asyncio.to_thread(client.connect, self.host, self.port, 30)
        client.loop_start()
        self._client = client
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)
            self._client = None

    def publish_one(self, index: int, sensor: VirtualSensor) -> Any:
        fport, payload, values = sensor.measurement()
        fmt = self.formats[index % len(self.formats)]
        topic, doc = uplink_document(fmt, sensor, sensor.fcnt, fport, payload)
        sensor.fcnt += 1
        sensor.sent += 1
        info = self._client.publish(topic, msgspec.json.encode(doc), qos=1)
        self.counts["published"] += 1
        self.expected.append((sensor.eui_hex, values))
        return info

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        n = 0
        while True:
            if self.rounds is not None and n >= self.rounds:
                break
            if self.duration is not None and loop.time() - started >= self.duration:
                break
            infos = [self.publish_one(i, s) for i, s in enumerate(self.sensors)]
            for info in infos:
                await asyncio.to_thread(info.wait_for_publish, 5.0)
            n += 1
            await asyncio.sleep(self.interval)  # the sensors' reporting interval
        self.done.set()
