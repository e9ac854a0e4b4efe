"""MQTT uplink settings (`type = "mqtt"`); the client itself lives in `client` beside it.

Config validation imports only this module, so a gateway whose config merely names MQTT does not
load paho until the uplink starts.

Sample:

    [[uplinks]]
    type = "mqtt"
    host = "platform.example.net"
    port = 8883
    tls = true
    ca_file = "/etc/edge-gateway/platform-ca.pem"
    username = "gw-0042"
    password = "..."
    topic_prefix = "city"
    gzip = true
    ack = "platform"            # end to end: the platform acknowledges on city/<gateway>/ack
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.uplinks.base import UplinkSettings

__all__ = ["Config"]

_TOPIC_LEVELS = r"^[^#+$/\x00][^#+\x00]*[^#+/\x00]$|^[^#+$/\x00]$"


class Config(UplinkSettings, kw_only=True, forbid_unknown_fields=True):
    type: str = "mqtt"
    # Broker host name or address.
    host: str = "localhost"
    # Broker port; 0 picks 1883, or 8883 when tls is on.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    # MQTT protocol version: "5" (default) or "3.1.1".
    protocol: Literal["5", "3.1.1"] = "5"
    # Topics are <topic_prefix>/<gateway id>/batch|event|status; no wildcards, no leading "$".
    topic_prefix: Annotated[str, msgspec.Meta(pattern=_TOPIC_LEVELS)] = "edge"
    # MQTT client id; "" derives it from the gateway id ("eg-<gateway id>", plus "-<name>" when
    # the uplink is not simply named "mqtt", so two MQTT uplinks never share an id).
    client_id: Annotated[str, msgspec.Meta(max_length=128)] = ""
    # Username/password authentication; an empty username sends none.
    username: str = ""
    password: str = ""
    # TLS: on with tls = true; ca_file is the CA bundle that signed the broker's certificate
    # ("" uses the system store). cert_file + key_file add a client certificate (mTLS).
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # Skip the broker host name check (never in production; for brokers reached by IP).
    tls_insecure: bool = False
    # Seconds between keepalive pings; the broker declares the gateway offline (last will)
    # after 1.5 times this without traffic.
    keepalive: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    # Send batch and event payloads gzip-compressed, as the outbox stores them (announced in the
    # MQTT 5 content type application/json+gzip; under 3.1.1 the gzip magic bytes 1f 8b announce
    # it: a JSON document never starts with them). false sends plain JSON.
    gzip: bool = True
    # MQTT 5 only: treat a PUBACK saying "no matching subscribers" (0x10) as not delivered, so
    # a batch stays in the outbox until the platform's receiver is subscribed (the broker keeps
    # nothing for absent clean-session subscribers).
    require_subscriber: bool = False
    # The broker's limit on one packet in bytes, for brokers that cannot announce it (MQTT 3.1.1
    # has no CONNACK properties; Mosquitto's max_packet_size closes the connection on a larger
    # PUBLISH): a batch over it goes to the dead letters instead of being sent again for ever.
    # 0: no limit known. Under MQTT 5 the smaller of this and the announced limit applies.
    max_packet_size: Annotated[int, msgspec.Meta(ge=0, le=268_435_460)] = 0
    # Seconds to wait for the TCP/TLS connection and the broker's CONNACK.
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    # Seconds to wait for a PUBACK before the batch counts as not delivered (and is retried).
    ack_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # Who acknowledges a batch. "broker": its PUBACK, and the batch leaves the outbox. QoS 1 is
    # hop by hop, so a broker restarted without persistence loses what it acknowledged but had
    # not yet passed on. "platform": end to end; the platform publishes the seq ranges it has
    # accounted on <topic_prefix>/<gateway id>/ack ({"stream": ..., "ranges": [[first, last],
    # ...]}), and only those batches leave the outbox (simulators/platform/README.md).
    ack: Literal["broker", "platform"] = "broker"
    # ack = "platform": seconds to wait for the platform's acknowledgement once the broker has
    # the batch; then the batch counts as not delivered and is sent again (after backoff).
    platform_ack_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0

    def validate(self) -> list[str]:
        problems: list[str] = []
        if bool(self.cert_file) != bool(self.key_file):
            problems.append(
                "cert_file: expected cert_file and key_file together, found "
                f"cert_file={self.cert_file!r} key_file={self.key_file!r}"
            )
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key):
                    problems.append(f"{key}: expected tls = true when {key} is set, found tls = false")
            if self.tls_insecure:
                problems.append("tls_insecure: expected tls = true, found tls = false")
        if self.require_subscriber and self.protocol != "5":
            problems.append('require_subscriber: expected protocol = "5", found "3.1.1"')
        if self.password and not self.username:
            problems.append("password: expected a username with it, found username = \"\"")
        return problems

    def effective_port(self) -> int:
        return self.port or (8883 if self.tls else 1883)

    def effective_client_id(self, gateway_id: str) -> str:
        if self.client_id:
            return self.client_id
        suffix = "" if self.name in ("", "mqtt") else f"-{self.name}"
        return f"eg-{gateway_id}{suffix}"
