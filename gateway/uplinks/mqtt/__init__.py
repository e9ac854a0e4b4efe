"""Uplink `mqtt`: batches as QoS 1 PUBLISHes to the platform's broker (paho, MQTT 5 or 3.1.1,
TLS/mTLS, gzip, status with a last will, optional end-to-end acknowledgement by the platform).

`config` (its Config, all that validating a config imports) and `client` (the uplink; paho is
imported only when the uplink starts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.uplinks.mqtt.config import Config

if TYPE_CHECKING:
    from gateway.uplinks.mqtt.client import MqttUplink

__all__ = ["Config", "load_uplink"]


def load_uplink() -> type[MqttUplink]:
    from gateway.uplinks.mqtt.client import MqttUplink

    return MqttUplink
