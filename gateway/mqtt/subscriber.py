"""The MQTT subscriber drivers take their input with (e.g. a LoRaWAN network server's integration).

Built on gmqtt (asyncio-native, TLS, MQTT 3.1.1 and 5, persistent sessions): chosen over paho
and aiomqtt by CPU per message, measured with `benchmarks/mqtt_input.py` (figures in the lorawan
README). Everything runs on the event loop; `on_message(topic, payload)` is called there, once
per PUBLISH.

What it guarantees:
- TLS with a CA bundle, an optional client certificate (mTLS), username and password. A bad
  TLS file is a `TlsFileError` naming the file, raised before any connection is tried.
- A persistent session by default (MQTT 3.1.1 clean session 0, MQTT 5 clean start 0 with a
  session expiry): with a fixed client id, the broker keeps the subscription and queues QoS 1
  messages while the gateway is away (restart, crash, link down) and delivers them on the next
  connection, so they are not lost. A zero-length client id cannot have a session (MQTT 3.1.1
  section 3.1.3.1): the caller derives a stable one.
- QoS 1 messages are acknowledged by gmqtt as they arrive and handed to `on_message` in the
  same event-loop step, so a PUBACK never goes out for a message the driver has not seen unless
  the process dies inside that step. (gmqtt acknowledges QoS 2 the same way, on PUBLISH: a
  QoS 2 message the broker sends again before PUBREL is delivered again.)
- No reconnection here: a refused CONNACK, a TLS failure, an unreachable broker, a lost
  connection or a missing keepalive answer raise `DriverError` (from `start` or `wait_failed`),
  and the runtime's driver supervisor restarts the driver with backoff and jitter. gmqtt's own
  reconnect is switched off (`reconnect` overridden), so an old client never competes with the
  restarted one for the same client id.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from gateway.errors import DriverError
from gateway.mqtt.tls import tls_context

__all__ = ["MqttSubscriber", "SubscriberSettings"]

# A session the broker keeps for a day by default (MQTT 5 section 3.1.2.11.2); MQTT 3.1.1 has
# no expiry on the wire (Mosquitto's persistent_client_expiration decides).
DEFAULT_SESSION_EXPIRY = 86_400


@dataclass(frozen=True)
class SubscriberSettings:
    host: str
    port: int
    topics: list[str]
    client_id: str
    qos: int = 1
    username: str = ""
    password: str = ""
    keepalive: int = 30
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # False: a persistent session (needs a client id); True: the broker forgets us on disconnect.
    clean_session: bool = False
    session_expiry: int = DEFAULT_SESSION_EXPIRY
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    connect_timeout: float = 10.0
    # config key names, for errors that name what to fix
    tls_keys: tuple[str, str, str] = field(default=("ca_file", "cert_file", "key_file"))


class _Client(gmqtt.Client):  # type: ignore[misc] # gmqtt ships no type information
    """gmqtt's client without its own reconnection: the driver supervisor owns retries."""

    async def reconnect(self, delay: bool = False) -> None:
        return None


class MqttSubscriber:
    """Subscribe to topic filters; deliver (topic, payload) on the event loop."""

    def __init__(self, settings: SubscriberSettings, on_message: Callable[[str, bytes], None],
                 *, logger: logging.Logger | None = None) -> None:
        if not settings.client_id and not settings.clean_session:
            raise ValueError("a persistent session needs a client id (MQTT 3.1.1 section 3.1.3.1)")
        self.settings = settings
        self.on_message = on_message
        self.subscribed = asyncio.Event()
        self.refused_topics: list[str] = []  # filters the broker answered 0x80 in SUBACK
        self.session_present = False  # the broker still had our session (CONNACK flag)
        self.messages = 0
        self._client: _Client | None = None
        self._failed: asyncio.Future[str] | None = None
        self._logger = logger or logging.getLogger("gateway.mqtt.subscriber")

    @property
    def where(self) -> str:
        return f"MQTT broker {self.settings.host}:{self.settings.port}"

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, wait for CONNACK, subscribe; `subscribed` is set on SUBACK. Raises
        `TlsFileError` for unusable TLS files and `DriverError` when the broker cannot be used."""
        settings = self.settings
        if not settings.topics:
            raise DriverError("no MQTT topic filters to subscribe to (MQTT 3.1.1 section 3.8.3 "
                              "needs at least one)")
        context: ssl.SSLContext | bool = False
        if settings.tls:
            context = tls_context(ca_file=settings.ca_file, cert_file=settings.cert_file,
                                  key_file=settings.key_file, insecure=settings.tls_insecure,
                                  keys=settings.tls_keys)
        loop = asyncio.get_running_loop()
        self.subscribed = asyncio.Event()
        self._failed = loop.create_future()
        version = MQTTv50 if settings.protocol == "5" else MQTTv311
        properties: dict[str, Any] = {}
        if version == MQTTv50 and not settings.clean_session:
            properties["session_expiry_interval"] = settings.session_expiry
        client = _Client(settings.client_id, clean_session=settings.clean_session,
                         logger=self._logger, **properties)
        if settings.username:
            client.set_auth_credentials(settings.username, settings.password or None)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        self._client = client
        try:
            await self._connect(client, context, version)
        except BaseException:
            await self.stop()
            raise
        client.subscribe([gmqtt.Subscription(topic, qos=settings.qos) for topic in settings.topics])

    async def _connect(self, client: _Client, context: ssl.SSLContext | bool, version: int) -> None:
        settings, where = self.settings, self.where
        assert self._failed is not None
        connect = asyncio.ensure_future(client.connect(
            settings.host, settings.port, ssl=context, keepalive=settings.keepalive,
            version=version))
        try:
            # a connection closed before CONNACK never completes gmqtt's connect(): race it
            done, _ = await asyncio.wait({connect, self._failed}, timeout=settings.connect_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if connect in done:
                connect.result()
            elif self._failed in done:
                raise DriverError(f"{where} closed the connection before CONNACK (a TLS/plain "
                                  "port mix-up, or a refused client certificate?)")
            else:
                raise DriverError(f"no answer from {where} within {settings.connect_timeout:g} s")
        except gmqtt.MQTTConnectError as error:
            raise DriverError(f"{where} refused the connection: {error}") from None
        except ssl.SSLCertVerificationError as error:
            raise DriverError(f"{where}: TLS certificate rejected: {error.verify_message}") from None
        except ssl.SSLError as error:
            raise DriverError(f"{where}: TLS handshake failed: {error.reason or error}") from None
        except OSError as error:
            raise DriverError(f"cannot reach {where}: {error.strerror or error}") from None
        finally:
            if not connect.done():
                connect.cancel()

    async def wait_failed(self) -> None:
        """Return never while connected; raise DriverError when the connection is lost."""
        assert self._failed is not None
        reason = await self._failed
        raise DriverError(reason)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.on_disconnect = _ignore
        client.on_message = _ignore
        try:
            async with asyncio.timeout(2.0):
                await client.disconnect()
        except (OSError, TimeoutError, AttributeError):
            pass  # the connection is going away either way (AttributeError: never connected)

    # --- gmqtt callbacks (event loop) --------------------------------------------------------

    def _on_connect(self, client: Any, flags: Any, result: Any, properties: Any) -> None:
        self.session_present = bool(flags)

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int,
                    properties: Any) -> None:
        self.messages += 1
        try:
            self.on_message(topic, payload)
        except Exception as error:  # noqa: BLE001 - a callback bug must not drop the link
            asyncio.get_running_loop().call_exception_handler(
                {"message": "MQTT on_message failed", "exception": error})

    def _on_subscribe(self, client: Any, mid: int, granted: Any, properties: Any) -> None:
        codes = list(granted)
        self.refused_topics = [topic for topic, code in zip(self.settings.topics, codes, strict=False)
                               if code >= 0x80]
        self.subscribed.set()

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(f"disconnected from the {self.where}")


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
