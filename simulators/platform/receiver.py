"""The platform receiver: subscribes to the gateways' topics and keeps a `Ledger`.

paho runs in its own thread (`loop_start`) and reconnects by itself with a short delay, so after a
broker outage the receiver is subscribed again before a gateway (backing off for seconds) comes
back. Subscriptions are made in `on_connect`, hence renewed on every reconnect. With MQTT 5 the
batch and event topics can be taken as a shared subscription (`$share/<group>/...`) so several
receivers split one gateway fleet's load.

With `ack=True` the receiver acknowledges end to end (the MQTT uplink's `ack = "platform"`): once
the ledger has accounted a batch (new or a duplicate of one it holds) it publishes, QoS 1,
`{"stream": ..., "ranges": [[seq, seq]]}` on `<prefix>/<gateway>/ack`, the gateway taken from
the topic the batch came on. Invalid payloads are not acknowledged: the gateway sends them again
until its timeout, and the books count each as invalid.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators.platform.ledger import Accounted, Ledger

__all__ = ["PlatformReceiver"]


class PlatformReceiver:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        prefix: str = "edge",
        share_group: str = "",
        protocol: str = "5",
        username: str = "",
        password: str = "",
        ca_file: str = "",
        client_id: str = "",
        session_expiry: int = 0,
        ack: bool = False,
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.share_group = share_group
        self.ack = ack
        self.acks_sent = 0
        self.ledger = Ledger()
        self.subscribed = threading.Event()
        self.connects = 0
        self.arrival_times: list[float] = []  # monotonic time of each entry in ledger.arrivals
        mqtt_protocol = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        if share_group and mqtt_protocol != mqtt.MQTTv5:
            raise ValueError("shared subscriptions need MQTT 5")
        if session_expiry and not client_id:
            raise ValueError("a persistent session needs a fixed client id")
        # session_expiry > 0: a persistent session (MQTT 5 session expiry, 3.1.1 clean session
        # off). A broker with persistence keeps the QoS 1 messages it accepted for this receiver
        # across its own restart: without that, what the broker acknowledged to the gateway but
        # had not yet passed on is lost with the broker (QoS 1 is hop by hop).
        self.session_expiry = session_expiry
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt_protocol,
            clean_session=(not session_expiry) if mqtt_protocol == mqtt.MQTTv311 else None,
        )
        self._protocol = mqtt_protocol
        if username:
            self._client.username_pw_set(username, password or None)
        if ca_file:
            self._client.tls_set(ca_certs=ca_file)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect

    # ---------------------------------------------------------------- topics

    def data_topics(self) -> list[str]:
        topics = [f"{self.prefix}/+/batch", f"{self.prefix}/+/event"]
        if self.share_group:
            topics = [f"$share/{self.share_group}/{t}" for t in topics]
        return topics

    # ---------------------------------------------------------------- lifecycle

    def start_sync(self, timeout: float = 10.0) -> None:
        if self._protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)
            if self.session_expiry:
                properties.SessionExpiryInterval = self.session_expiry
            self._client.connect(self.host, self.port, keepalive=30,
                                 clean_start=not self.session_expiry, properties=properties)
        else:
            self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError(f"platform receiver not subscribed on {self.host}:{self.port}")

    def stop_sync(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def report(self) -> dict[str, Any]:
        return self.ledger.report()

    def write_report(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.report(), indent=2, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- paho thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            return
        self.connects += 1
        self.subscribed.clear()
        subscriptions = [(topic, 1) for topic in self.data_topics()]
        subscriptions.append((f"{self.prefix}/+/status", 1))
        client.subscribe(subscriptions)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.subscribed.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/status"):
            self.ledger.ingest_status(message.payload, message.topic)
            return
        content_type = None
        properties = getattr(message, "properties", None)
        if properties is not None:
            content_type = getattr(properties, "ContentType", None)
        accounted = self.ledger.account(message.payload, content_type, message.topic)
        if accounted is None:
            return
        if accounted.new:
            self.arrival_times.append(time.monotonic())
        if self.ack:
            self._acknowledge(client, message.topic, accounted)

    def _acknowledge(self, client: mqtt.Client, topic: str, accounted: Accounted) -> None:
        # <prefix>/<gateway>/batch -> <prefix>/<gateway>/ack: the gateway listens on its own id
        base = topic.rsplit("/", 1)[0]
        body = {"stream": accounted.stream, "ranges": [[accounted.seq, accounted.seq]]}
        client.publish(f"{base}/ack", json.dumps(body, separators=(",", ":")), qos=1)
        self.acks_sent += 1
