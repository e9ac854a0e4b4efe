"""MQTT uplink: one batch is one QoS 1 PUBLISH, acknowledged by its PUBACK.

Threading choice: paho runs its network loop in its own thread (gateway.mqtt.PollLoop: paho's
loop driven with poll(2), since `loop_start()`'s select(2) cannot take a descriptor >= 1024),
not on the asyncio loop through `add_reader`. paho's `connect()` resolves the name, opens TCP and does the
TLS handshake as blocking calls, and its loop does blocking SSL reads/writes; with `add_reader`
those would either stall the event loop on a slow LTE link or need a thread anyway. The thread
touches nothing of ours except through `loop.call_soon_threadsafe`: CONNACK, PUBACK and
disconnect callbacks are posted to the event loop, where all state lives.

Reconnecting belongs to the runner (backoff with jitter, gateway/uplinks/runner.py): paho's own
reconnect is switched off (`reconnect_on_failure=False`), a lost connection fails every batch
in flight with `UplinkUnavailable`, and the next `start()` or `send()` opens a fresh connection.
Batches whose PUBACK never came are sent again: delivery is at least once, and the platform
removes the duplicates by batch id.

End-to-end acknowledgement (`ack = "platform"`): QoS 1 is hop by hop, so a PUBACK only says the
broker has the batch. With this option the uplink also subscribes (QoS 1) to
`<prefix>/<gateway>/ack`, where the platform publishes `{"stream": ..., "ranges": [[first, last],
...]}` once its books hold those batches, and `send()` returns only when a range covers the
batch's seq (in the outbox's stream). No acknowledgement within `platform_ack_timeout`, or the
connection lost before it came, fails the send with `UplinkUnavailable`: the runner backs off
and the batch is sent again; the platform removes the duplicate by batch id and acknowledges it
again. An acknowledgement for another stream (an older outbox database) is ignored and counted.

Payloads (the platform side must know this):
- `<prefix>/<gateway>/batch` and `<prefix>/<gateway>/event`, QoS 1, not retained, one
  schema/batch-v2.json document each (events batches go to `event`).
- MQTT 5: content type `application/json+gzip` (the default: the outbox stores payloads gzipped
  and they are sent as stored), or `application/json` (payload format indicator 1, UTF-8) when
  gzip is off. Nothing else rides in properties: seq, stream and batch id are in the document.
- MQTT 3.1.1 has no properties: a gzip payload is recognised by its magic bytes `1f 8b`, which no
  JSON document can start with.
- `<prefix>/<gateway>/status`, QoS 1, retained: `{"gateway", "state": "online"|"offline",
  "ts", "client_id", "reason"?}`; the last will publishes the offline one if the link dies.
- With remote configuration on (gateway/remote_config.py) the uplink subscribes, QoS 1, to
  `<prefix>/<gateway>/config` after every CONNACK (clean sessions keep no subscription), and
  publishes each attempt's result, retained, to `<prefix>/<gateway>/config/result`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from typing import Any, Final, NoReturn

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.batch import Batch
from gateway.errors import BatchRejected, UplinkUnavailable
from gateway.logs import LOG_ONCE_MAX
from gateway.mqtt.pollloop import PollLoop
from gateway.mqtt.tls import TlsFileError, tls_context
from gateway.uplinks.base import Uplink, UplinkContext
from gateway.uplinks.mqtt import Config

__all__ = ["CONTENT_TYPE_GZIP", "CONTENT_TYPE_JSON", "MqttUplink", "connack_cause", "parse_platform_ack"]

CONTENT_TYPE_JSON: Final = "application/json"
CONTENT_TYPE_GZIP: Final = "application/json+gzip"

# CONNACK reason codes (MQTT 5.0 section 3.2.2.2; 3.1.1 return codes 1-5 arrive mapped to the
# same values by paho): value -> (counter token, text for the log line).
_CONNACK_CAUSES: Final[dict[int, tuple[str, str]]] = {
    0x80: ("refused_unspecified", "unspecified error"),
    0x81: ("refused_malformed", "malformed packet"),
    0x82: ("refused_protocol_error", "protocol error"),
    0x83: ("refused_implementation", "implementation specific error"),
    0x84: ("refused_protocol_version", "protocol version not supported: try protocol = \"3.1.1\""),
    0x85: ("refused_client_id", "client identifier not valid"),
    0x86: ("bad_credentials", "bad user name or password"),
    # Mosquitto 2.0 answers a wrong password with this one, not 0x86.
    0x87: ("not_authorized", "not authorized (check username and password)"),
    0x88: ("server_unavailable", "server unavailable"),
    0x89: ("server_busy", "server busy"),
    0x8A: ("banned", "banned"),
    0x8C: ("bad_auth_method", "bad authentication method"),
    0x90: ("refused_topic", "topic name invalid"),
    0x95: ("refused_packet_too_large", "packet too large"),
    0x97: ("quota_exceeded", "quota exceeded"),
    0x99: ("refused_payload_format", "payload format invalid"),
    0x9A: ("refused_retain", "retain not supported"),
    0x9B: ("refused_qos", "QoS not supported"),
    0x9C: ("use_another_server", "use another server"),
    0x9D: ("server_moved", "server moved"),
    0x9F: ("connection_rate_exceeded", "connection rate exceeded"),
}

# PUBACK reason codes that condemn the batch itself rather than the link (MQTT 5.0 3.4.2.1).
_PUBACK_REJECTS: Final[frozenset[int]] = frozenset({0x99})
# PUBACK 0x10 "No matching subscribers" (MQTT 5.0 3.4.2.1): accepted, but nobody got it.
_NO_SUBSCRIBERS: Final = 0x10


def parse_platform_ack(payload: bytes) -> tuple[str, list[tuple[int, int]]]:
    """A platform acknowledgement `{"stream": str, "ranges": [[first, last], ...]}` as (stream,
    ranges); ValueError with the reason for anything else (the caller counts and drops it)."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("stream"), str):
        raise ValueError("expected an object with a string \"stream\"")
    ranges = document.get("ranges")
    if not isinstance(ranges, list):
        raise ValueError("expected \"ranges\": [[first, last], ...]")
    out: list[tuple[int, int]] = []
    for pair in ranges:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(type(n) is int for n in pair) or pair[0] > pair[1]):
            raise ValueError(f"expected a range [first, last] with first <= last, found {pair!r}")
        out.append((pair[0], pair[1]))
    return document["stream"], out


def connack_cause(value: int) -> tuple[str, str]:
    return _CONNACK_CAUSES.get(value, (f"refused_{value:#04x}", f"reason code {value:#04x}"))


class _NoConnack(ConnectionError):
    """The server closed the connection (or sent something that is not MQTT) before CONNACK."""


def _publish_size(topic: str, payload: bytes, properties: Properties | None) -> int:
    """Bytes of a QoS 1 PUBLISH packet (MQTT 5.0 section 3.3): fixed header, topic, packet id,
    properties and payload; at most 4 bytes of remaining length counted."""
    props = len(properties.pack()) if properties is not None else 1
    return 1 + 4 + 2 + len(topic.encode()) + 2 + props + len(payload)


def _connect_error_cause(error: BaseException, tls: bool) -> tuple[str, str]:
    """A failed TCP/TLS connect as (counter token, text)."""
    if isinstance(error, _NoConnack):
        return "no_connack", ("the server closed the connection without a CONNACK (not an MQTT "
                              "broker, a TLS/plain port mix-up, or a refused client certificate?)")
    if tls and isinstance(error, ConnectionResetError):
        return "tls_error", "TLS handshake failed: connection reset (is this port TLS?)"
    if isinstance(error, ssl.SSLCertVerificationError):
        return "bad_certificate", f"TLS certificate rejected: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return "tls_error", f"TLS handshake failed: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection_refused", "connection refused (nothing listening)"
    if isinstance(error, TimeoutError):
        return "connect_timeout", "timed out"
    if isinstance(error, OSError):
        return "network_error", error.strerror or str(error)
    return "connect_error", f"{type(error).__name__}: {error}"


class MqttUplink(Uplink[Config]):
    type_name = "mqtt"

    def __init__(self, config: Config, ctx: UplinkContext) -> None:
        super().__init__(config, ctx)
        self.client_id = config.effective_client_id(ctx.gateway_id)
        base = f"{config.topic_prefix}/{ctx.gateway_id}"
        self.topic_batch = f"{base}/batch"
        self.topic_event = f"{base}/event"
        self.topic_status = f"{base}/status"
        self.topic_config = f"{base}/config"
        self.topic_config_result = f"{base}/config/result"
        self._config_callback: Callable[[bytes], None] | None = None
        self.topic_ack = f"{base}/ack"
        self.platform_ack = config.ack == "platform"
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[Any] | None = None
        # mid -> (future resolved by the PUBACK, whether "no matching subscribers" fails it)
        self._pending: dict[int, tuple[asyncio.Future[None], bool]] = {}
        self._connect_lock = asyncio.Lock()
        # ack = "platform": seq -> future resolved by the platform's acknowledgement
        self._awaiting_platform: dict[int, asyncio.Future[None]] = {}
        self._suback: asyncio.Future[Any] | None = None
        self._stream: str | None = None  # the outbox's stream, learnt from the first batch
        self._logged_bad_acks: set[str] = set()
        # One PUBLISH property set for every batch (built once: paho's Properties is costly to
        # build per message). MQTT 5 only; 3.1.1 has no properties.
        self._publish_properties: Properties | None = None
        if config.protocol == "5":
            self._publish_properties = Properties(PacketTypes.PUBLISH)
            if config.gzip:
                self._publish_properties.ContentType = CONTENT_TYPE_GZIP
            else:
                self._publish_properties.ContentType = CONTENT_TYPE_JSON
                self._publish_properties.PayloadFormatIndicator = 1
        self._connected = False
        self._network: PollLoop | None = None
        self.max_packet_size: int | None = None  # from the broker's CONNACK (MQTT 5)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        async with self._connect_lock:
            if not self._connected:
                await self._connect()

    async def stop(self) -> None:
        client = self._client
        if client is None:
            return
        if self._connected:
            try:
                await self._publish(self.topic_status, self._status("offline", "shutdown"), retain=True,
                                    ack_wait=min(self.config.ack_timeout, 1.0))
            except (UplinkUnavailable, BatchRejected):
                pass  # the broker publishes the last will instead
        self._connected = False
        self.ctx.connected = False
        client.disconnect()
        await self._stop_network()
        self._client = None
        self._fail_pending("uplink stopped")

    async def send(self, batch: Batch) -> None:
        if not self._connected:
            async with self._connect_lock:
                if not self._connected:
                    await self._connect()
        topic = self.topic_event if batch.kind == "events" else self.topic_batch
        # stored gzipped (gateway.batch.ENCODING): sent as stored unless the platform wants JSON
        payload = batch.payload if self.config.gzip else batch.json()
        properties = self._publish_properties
        if not self.platform_ack:
            await self._publish(topic, payload, properties=properties,
                                ack_wait=self.config.ack_timeout,
                                need_subscriber=self.config.require_subscriber)
            self.ctx.count("published_bytes", len(payload))
            return
        if self._stream is None:
            # one outbox database, one stream, for the life of the process: decoded once
            self._stream = batch.document().stream
        assert self._loop is not None
        # Registered before the PUBLISH: the platform may answer before the PUBACK is seen.
        waiter: asyncio.Future[None] = self._loop.create_future()
        earlier = self._awaiting_platform.get(batch.seq)
        if earlier is not None and not earlier.done():
            earlier.cancel()
        self._awaiting_platform[batch.seq] = waiter
        try:
            await self._publish(topic, payload, properties=properties,
                                ack_wait=self.config.ack_timeout,
                                need_subscriber=self.config.require_subscriber)
            self.ctx.count("published_bytes", len(payload))
            timeout = self.config.platform_ack_timeout
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                self.ctx.count("platform_ack_timeouts")
                raise UplinkUnavailable(
                    f"no acknowledgement from the platform on {self.topic_ack} within {timeout:g} s"
                ) from None
        finally:
            if self._awaiting_platform.get(batch.seq) is waiter:
                del self._awaiting_platform[batch.seq]
        self.ctx.count("platform_acked")

    # ----------------------------------------------------------------- remote configuration

    def watch_config(self, callback: Callable[[bytes], None]) -> None:
        """Deliver every message on the config topic to `callback`, on the event loop. Takes
        effect at once when connected, else at the next CONNACK."""
        self._config_callback = callback
        if self._connected:
            self._subscribe_config()

    async def publish_config_result(self, payload: bytes) -> None:
        """Retained QoS 1 on `<prefix>/<gateway>/config/result`; raises UplinkUnavailable."""
        await self._publish(self.topic_config_result, payload, retain=True, ack_wait=self.config.ack_timeout)

    def _subscribe_config(self) -> None:
        client = self._client
        if client is None or self._config_callback is None:
            return
        result, _ = client.subscribe(self.topic_config, qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            self.ctx.count("config_subscribe_failed")
            self.ctx.log.warning("config_subscribe_failed", note="retried at the next connect",
                                 reason=mqtt.error_string(result))

    # ----------------------------------------------------------------- connection

    async def _connect(self) -> None:
        """Open a fresh connection and wait for a successful CONNACK (event loop thread)."""
        await self._discard_client()
        config = self.config
        self._loop = asyncio.get_running_loop()
        protocol = mqtt.MQTTv5 if config.protocol == "5" else mqtt.MQTTv311
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=True if protocol == mqtt.MQTTv311 else None,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(max(20, config.max_in_flight + 4))
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        if config.tls:
            try:
                context = tls_context(ca_file=config.ca_file, cert_file=config.cert_file,
                                      key_file=config.key_file, insecure=config.tls_insecure)
            except TlsFileError:
                # Not UplinkUnavailable: a file does not come back by retrying. The runner stops
                # this uplink (TlsFileError.permanent) with the file named.
                self.ctx.count("connect_failed_tls_files")
                raise
            client.tls_set_context(context)
            if config.tls_insecure:
                client.tls_insecure_set(True)
        client.will_set(self.topic_status, self._status("offline", "connection lost"), qos=1,
                        retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        if self.platform_ack:
            client.on_subscribe = self._on_subscribe
        self._connack = self._loop.create_future()
        self._client = client
        where = f"{config.host}:{config.effective_port()}"
        try:
            async with asyncio.timeout(config.connect_timeout):
                await asyncio.to_thread(self._blocking_connect, client)
                self._network = PollLoop(client)
                self._network.start()
                reason = await self._connack
        except TimeoutError:
            await self._discard_client()
            self._refused("connect_timeout", f"no CONNACK within {config.connect_timeout:g} s",
                          where)
        except (OSError, ssl.SSLError) as error:
            await self._discard_client()
            self._refused(*_connect_error_cause(error, config.tls), where)
        except UplinkUnavailable:
            await self._discard_client()
            raise
        if reason.is_failure:
            await self._discard_client()
            cause, text = connack_cause(reason.value)
            self._refused(cause, f"broker refused the connection: {text}", where)
        if self.platform_ack:
            await self._subscribe_acks(client, where)
        self._connected = True
        self.ctx.connected = True
        self.ctx.count("connects")
        self.ctx.log.info("uplink_connected", broker=where, client_id=self.client_id,
                          protocol=config.protocol, tls=config.tls)
        await self._publish(self.topic_status, self._status("online"), retain=True,
                            ack_wait=config.ack_timeout)
        self._subscribe_config()

    async def _subscribe_acks(self, client: mqtt.Client, where: str) -> None:
        """Subscribe to the platform's acknowledgements before any batch goes out, so none
        answering a batch of this connection can be missed (the session is clean)."""
        assert self._loop is not None
        self._suback = self._loop.create_future()
        result, _mid = client.subscribe(self.topic_ack, qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            await self._discard_client()
            self._refused("subscribe_failed", f"cannot subscribe to {self.topic_ack}: "
                          f"{mqtt.error_string(result)}", where)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                reasons = await self._suback
        except (TimeoutError, ConnectionError):
            await self._discard_client()
            self._refused("subscribe_failed", f"no SUBACK for {self.topic_ack}", where)
        if any(getattr(reason, "is_failure", False) or getattr(reason, "value", 0) >= 0x80
               for reason in reasons):
            await self._discard_client()
            self._refused("subscribe_refused",
                          f"broker refused the subscription to {self.topic_ack}", where)

    def _blocking_connect(self, client: mqtt.Client) -> None:
        # In a worker thread: name resolution, TCP connect and TLS handshake block.
        clean_start = True if self.config.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        client.connect(self.config.host, self.config.effective_port(),
                       keepalive=self.config.keepalive, clean_start=clean_start)

    def _refused(self, cause: str, text: str, where: str = "") -> NoReturn:
        """Count one failed connection attempt and raise UplinkUnavailable.

        The reason text is the clear log line: the runner logs it once per distinct reason
        until the next success (so an outage of hours is one line) and counts every attempt;
        here the cause is counted as `connect_failed_<cause>` for `/metrics`."""
        self.ctx.count(f"connect_failed_{cause}")
        message = f"mqtt connection to {where or self.config.host} failed: {text}"
        self.ctx.log.debug("connect_failed", reason=message, cause=cause, client_id=self.client_id)
        raise UplinkUnavailable(message)

    async def _stop_network(self) -> None:
        network, self._network = self._network, None
        if network is not None:
            await asyncio.to_thread(network.stop)

    async def _discard_client(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        self.ctx.connected = False
        if client is not None:
            client.on_connect = client.on_disconnect = client.on_publish = None
            client.on_message = client.on_subscribe = None
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - tearing down a half-open client; nothing to save
                pass
            await self._stop_network()
            # Without a network loop (connect failed) the socket is still open: close it.
            sock = client.socket()
            if sock is not None:
                sock.close()
        self._fail_pending("connection replaced")

    # ----------------------------------------------------------------- publishing

    def packet_limit(self) -> tuple[int | None, str]:
        """The largest PUBLISH the broker takes, and where that figure comes from: its CONNACK
        (MQTT 5) or the configured max_packet_size (any protocol), the smaller of the two."""
        announced, configured = self.max_packet_size, self.config.max_packet_size
        if configured and (announced is None or configured < announced):
            return configured, "the configured max_packet_size"
        return announced, "the broker's Maximum Packet Size"

    async def _publish(self, topic: str, payload: bytes, *, properties: Properties | None = None,
                       retain: bool = False, ack_wait: float, need_subscriber: bool = False) -> None:
        client = self._client
        if client is None or not self._connected:
            raise UplinkUnavailable("mqtt not connected")
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        limit, source = self.packet_limit()
        if limit is not None and _publish_size(topic, payload, properties) > limit:
            # The broker would drop the PUBLISH and close the connection (MQTT 5.0 3.2.2.3.6):
            # retrying could never succeed, so the batch goes to the dead letters.
            raise BatchRejected(f"a PUBLISH of {_publish_size(topic, payload, properties)} bytes exceeds "
                                f"{source} of {limit}")
        info = client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if info.rc == mqtt.MQTT_ERR_PAYLOAD_SIZE:
                raise BatchRejected("payload larger than MQTT allows")
            raise UplinkUnavailable(f"mqtt publish failed: {mqtt.error_string(info.rc)}")
        # Registered before any await: the PUBACK callback is posted to this loop and so can
        # only run after this line, however fast the broker answers.
        self._pending[info.mid] = (future, need_subscriber)
        try:
            async with asyncio.timeout(ack_wait):
                await future
        except TimeoutError:
            self.ctx.count("ack_timeouts")
            raise UplinkUnavailable(f"no PUBACK within {ack_wait:g} s") from None
        finally:
            self._pending.pop(info.mid, None)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(UplinkUnavailable(f"mqtt connection lost ({reason})"))
        # An acknowledgement published while we were away is gone (clean session): send again
        # now rather than after the timeout.
        awaiting, self._awaiting_platform = self._awaiting_platform, {}
        for future in awaiting.values():
            if not future.done():
                future.set_exception(UplinkUnavailable(
                    f"mqtt connection lost before the platform acknowledged ({reason})"))

    def _status(self, state: str, reason: str = "") -> bytes:
        status: dict[str, Any] = {
            "gateway": self.ctx.gateway_id, "state": state, "ts": round(time.time(), 3),
            "client_id": self.client_id,
        }
        if reason:
            status["reason"] = reason
        return json.dumps(status, separators=(",", ":")).encode()

    # ----------------------------------------------------------------- paho thread callbacks
    # These run in paho's network thread: they only post to the event loop.

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        assert self._loop is not None
        # MQTT 5.0 section 3.2.2.3.6: the broker's Maximum Packet Size (absent: no limit)
        limit = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self._loop.call_soon_threadsafe(self._connack_arrived, client, reason, limit)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._disconnected, client, reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._acked, client, mid, reason)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._subscribed, client, list(reasons))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._message_arrived, client, message.topic, bytes(message.payload))

    # ----------------------------------------------------------------- event loop side

    def _message_arrived(self, client: mqtt.Client, topic: str, payload: bytes) -> None:
        if client is not self._client:
            return
        if topic == self.topic_config and self._config_callback is not None:
            self.ctx.count("config_messages")
            self._config_callback(payload)
        elif topic == self.topic_ack:
            self._platform_acked(client, topic, payload)

    def _subscribed(self, client: mqtt.Client, reasons: list[Any]) -> None:
        if client is self._client and self._suback is not None and not self._suback.done():
            self._suback.set_result(reasons)

    def _platform_acked(self, client: mqtt.Client, topic: str, payload: bytes) -> None:
        if client is not self._client or topic != self.topic_ack:
            return
        try:
            stream, ranges = parse_platform_ack(payload)
        except ValueError as error:
            self.ctx.count("platform_ack_invalid")
            # logged once per text; the texts name ranges, so at most LOG_ONCE_MAX of them
            if str(error) not in self._logged_bad_acks and len(self._logged_bad_acks) < LOG_ONCE_MAX:
                self._logged_bad_acks.add(str(error))
                self.ctx.log.warning("platform_ack_invalid", note="a malformed platform acknowledgement, ignored",
                                     topic=topic, reason=str(error))
            return
        if stream != self._stream:
            self.ctx.count("platform_ack_other_stream")
            return
        for seq, future in self._awaiting_platform.items():
            if future.done():
                continue
            for first, last in ranges:
                if first <= seq <= last:
                    future.set_result(None)
                    break

    def _connack_arrived(self, client: mqtt.Client, reason: Any, limit: int | None = None) -> None:
        if client is self._client and self._connack is not None and not self._connack.done():
            self.max_packet_size = limit if isinstance(limit, int) and limit > 0 else None
            self._connack.set_result(reason)

    def _disconnected(self, client: mqtt.Client, reason: Any) -> None:
        if client is not self._client:
            return
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(_NoConnack(str(reason)))
        if self._suback is not None and not self._suback.done():
            self._suback.set_exception(_NoConnack(str(reason)))
        if self._connected:
            self.ctx.count("disconnects")
            self.ctx.log.warning("uplink_disconnected", reason=str(reason),
                                 in_flight=len(self._pending))
        self._connected = False
        self.ctx.connected = False
        self._fail_pending(str(reason))

    def _acked(self, client: mqtt.Client, mid: int, reason: Any) -> None:
        if client is not self._client:
            return
        entry = self._pending.pop(mid, None)
        if entry is None or entry[0].done():
            return
        future, need_subscriber = entry
        value = getattr(reason, "value", 0)
        if value == _NO_SUBSCRIBERS and need_subscriber:
            self.ctx.count("puback_no_subscribers")
            future.set_exception(UplinkUnavailable("broker has no subscriber for the topic yet"))
            return
        if value >= 0x80:
            cause, text = connack_cause(value)
            self.ctx.count(f"puback_{cause}")
            if value in _PUBACK_REJECTS:
                future.set_exception(BatchRejected(f"broker refused the batch: {text}"))
            else:
                future.set_exception(UplinkUnavailable(f"broker refused the publish: {text}"))
            return
        future.set_result(None)
