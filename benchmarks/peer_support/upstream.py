"""What sits on the upstream broker: edge-gateway's platform receiver (counting window coverage)
and a fake ThingsBoard (answering what ThingsBoard IoT Gateway asks, counting its telemetry).

The fake ThingsBoard answers, as read from the installed gateway and tb-mqtt-client source:
- `v1/devices/me/rpc/request/<id>` `{"method": "getSessionLimits", ...}`: the gateway waits for
  this reply before it treats the connection as usable (`TBClient.is_connected()` needs
  `rate_limits_received`). Answered on `v1/devices/me/rpc/response/<id>` with session limits in
  ThingsBoard's shape (`maxPayloadSize`, `maxInflightMessages`, `rateLimits`,
  `gatewayRateLimits`); empty limit strings mean "no rate limit", so neither gateway is throttled.
- `v1/devices/me/attributes/request/<id>`: answered with no attributes.
- `v1/gateway/attributes/request` `{"id", "device", "keys"|"key", "client"}` (shared-attribute
  sync of each new device): answered on `v1/gateway/attributes/response` with no values.
Everything else the gateway publishes (`v1/gateway/connect`, attributes) is only counted.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.peer_support.workload import EdgeBooks, ThingsBoardBooks

__all__ = ["EdgeReceiver", "FakeThingsBoard", "session_limits"]

RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
ATTR_REQUEST = "v1/devices/me/attributes/request/"
ATTR_RESPONSE = "v1/devices/me/attributes/response/"
GW_ATTR_REQUEST = "v1/gateway/attributes/request"
GW_ATTR_RESPONSE = "v1/gateway/attributes/response"
GW_TELEMETRY = "v1/gateway/telemetry"


def session_limits(max_inflight: int = 100, max_payload: int = 65536) -> dict[str, Any]:
    """The getSessionLimits reply: ThingsBoard's keys, with no rate limits."""
    no_limits = {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""}
    return {
        "maxPayloadSize": max_payload,
        "maxInflightMessages": max_inflight,
        "rateLimits": dict(no_limits),
        "gatewayRateLimits": dict(no_limits),
    }


class _Subscriber:
    """A paho client on its own network thread; `target` readings covered sets `done`."""

    def __init__(self, host: str, port: int, topics: list[str], client_id: str) -> None:
        self.host, self.port, self.topics = host, port, topics
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.probe_seen = threading.Event()
        self.target = -1
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(self.host, self.port, keepalive=60)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"upstream subscriber not subscribed to {self.topics} in {timeout} s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def expect(self, target: int) -> None:
        with self.lock:
            self.target = target
            self._check()

    def _check(self) -> None:
        raise NotImplementedError


class EdgeReceiver(_Subscriber):
    """Counts the readings that edge-gateway's window records cover."""

    def __init__(self, host: str, port: int, topic_prefix: str = "edge") -> None:
        super().__init__(host, port, [f"{topic_prefix}/+/batch"], "peer-bench-platform")
        self.books = EdgeBooks()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.books.ingest(message.payload)
            if self.books.probe_records:
                self.probe_seen.set()
            self._check()

    def _check(self) -> None:
        if self.target >= 0 and self.books.readings_covered() >= self.target:
            self.done.set()

    def covered(self) -> int:
        with self.lock:
            return self.books.readings_covered()


class FakeThingsBoard(_Subscriber):
    """Just enough of ThingsBoard's MQTT device/gateway API for the IoT Gateway to run."""

    def __init__(self, host: str, port: int, limits: dict[str, Any] | None = None) -> None:
        # Two wildcards and nothing overlapping them: Mosquitto delivers one copy per matching
        # subscription, which would count telemetry twice.
        super().__init__(host, port, ["v1/gateway/#", "v1/devices/me/#"], "fake-thingsboard")
        self.books = ThingsBoardBooks()
        self.limits = limits or session_limits()
        self.seen: Counter[str] = Counter()  # topic family -> messages
        self.rpc_methods: Counter[str] = Counter()
        self.session_limits_answered = threading.Event()
        self._routes: dict[str, Callable[[str, bytes | bytearray], None]] = {
            RPC_REQUEST: self._rpc,
            ATTR_REQUEST: self._device_attributes,
            GW_ATTR_REQUEST: self._gateway_attributes,
        }

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        if topic == GW_TELEMETRY:
            with self.lock:
                self.seen[topic] += 1
                self.books.ingest(message.payload)
                if self.books.probe_values:
                    self.probe_seen.set()
                self._check()
            return
        for prefix, handler in self._routes.items():
            if topic.startswith(prefix):
                family = prefix.rstrip("/")
                with self.lock:
                    self.seen[family] += 1
                handler(topic, message.payload)
                return
        if topic.startswith(RPC_RESPONSE) or topic.startswith(ATTR_RESPONSE) or topic == GW_ATTR_RESPONSE:
            return  # our own answers, heard back through the wildcard subscriptions
        with self.lock:
            self.seen[topic] += 1

    def _rpc(self, topic: str, payload: bytes | bytearray) -> None:
        request_id = topic[len(RPC_REQUEST):]
        try:
            method = json.loads(payload).get("method", "")
        except (ValueError, AttributeError):
            method = "<unreadable>"
        with self.lock:
            self.rpc_methods[method] += 1
        if method == "getSessionLimits":
            self.client.publish(RPC_RESPONSE + request_id, json.dumps(self.limits), qos=1)
            self.session_limits_answered.set()
        else:
            self.client.publish(RPC_RESPONSE + request_id,
                                json.dumps({"error": f"method {method} unknown to the fake"}), qos=1)

    def _device_attributes(self, topic: str, payload: bytes | bytearray) -> None:
        self.client.publish(ATTR_RESPONSE + topic[len(ATTR_REQUEST):], "{}", qos=1)

    def _gateway_attributes(self, topic: str, payload: bytes | bytearray) -> None:
        try:
            request = json.loads(payload)
        except ValueError:
            return
        answer: dict[str, Any] = {"id": request.get("id"), "device": request.get("device")}
        if "keys" in request:
            answer["values"] = {}
        else:
            answer["value"] = None
        self.client.publish(GW_ATTR_RESPONSE, json.dumps(answer), qos=1)

    def _check(self) -> None:
        if self.target >= 0 and self.books.readings_covered() >= self.target:
            self.done.set()

    def covered(self) -> int:
        with self.lock:
            return self.books.readings_covered()
