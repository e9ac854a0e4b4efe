"""The `lorawan` driver's config table ([[drivers]] type = "lorawan"), validated when the
config is read; the keys are documented in README.md beside this file."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from gateway.driver import DriverSettings

__all__ = ["CODEC_NAMES", "Config", "Device", "Profile"]

# Codec names (drivers/lorawan/codecs/__init__.py CODECS); kept here so validating a config
# does not import the codecs.
CODEC_NAMES = (
    "cayenne_lpp",
    "dragino_lht65",
    "dragino_lht65n",
    "elsys",
    "milesight",
    "milesight_am100",
    "milesight_am300",
    "milesight_em500_co2",
    "decentlab_dl_sht35",
)

Hex16 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{16}$")]
Key = Annotated[str, msgspec.Meta(pattern=r"^([0-9a-fA-F]{32})?$")]


class Profile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Payload codec for every device of this profile (one of CODEC_NAMES).
    codec: str
    # Series per sensor channel (Cayenne LPP): "auto" gives a metric's channels their own device
    # id (lora:<deveui>/<channel>) when a frame carries it on several; "split" always does.
    channels: Literal["auto", "split"] = "auto"


class Device(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # DevEUI, 16 hex digits; the device id becomes lora:<deveui in lower case>.
    dev_eui: Hex16
    # Codec for this device; "" takes the profile's, then the driver's default_codec.
    codec: str = ""
    # Name of a [drivers.profiles.<name>] table.
    profile: str = ""
    # "auto" or "split" (see Profile.channels); "" takes the profile's, else "auto".
    channels: Literal["", "auto", "split"] = ""
    # Concentrator mode: "abp" (keys below) or "otaa" (app_key); "none" in network-server mode.
    activation: Literal["none", "abp", "otaa"] = "none"
    # ABP: DevAddr, 8 hex digits, as printed (big endian).
    dev_addr: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-fA-F]{8})?$")] = ""
    # ABP: network and application session keys, 32 hex digits each.
    nwk_skey: Key = ""
    app_skey: Key = ""
    # OTAA: root key (LoRaWAN 1.0.x AppKey), 32 hex digits.
    app_key: Key = ""
    # OTAA: AppEUI/JoinEUI the device must present; "" accepts any.
    join_eui: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-fA-F]{16})?$")] = ""


class Config(DriverSettings):
    # "network_server": subscribe to a network server's MQTT integration;
    # "concentrator": be the packet forwarder's server (Semtech UDP) and do the LoRaWAN crypto.
    mode: Literal["network_server", "concentrator"] = "network_server"
    # Concentrator: host:port to listen on for packet forwarders (1700 is the forwarder default).
    listen: str = "0.0.0.0:1700"
    # Concentrator: NetID (6 hex digits) for OTAA DevAddr allocation and key derivation.
    net_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{6}$")] = "000000"
    # Concentrator: copies of one frame from several gateways within this many seconds are one.
    dedup_window: Annotated[float, msgspec.Meta(ge=0.0, le=5.0)] = 0.2
    # Concentrator: JOIN_ACCEPT_DELAY1 in seconds (RX1 of the JoinAccept, region default 5).
    join_accept_delay: Annotated[float, msgspec.Meta(ge=1.0, le=15.0)] = 5.0
    # Concentrator: RX1 delay (RECEIVE_DELAY1, seconds) given to OTAA devices in the JoinAccept.
    rx1_delay: Annotated[int, msgspec.Meta(ge=1, le=15)] = 1
    # Concentrator: JoinAccept transmit power in dBm.
    tx_power: Annotated[int, msgspec.Meta(ge=0, le=30)] = 14
    # Concentrator: the gateway's own receive time ("time" of rxpk) is used as event time when it
    # is within this many seconds of the local clock, else the local receive time is.
    max_clock_skew: Annotated[float, msgspec.Meta(ge=0.0)] = 300.0
    # Sessions and frame counters are written to the state folder at most this often (seconds).
    state_flush_interval: Annotated[float, msgspec.Meta(ge=0.05, le=3600.0)] = 10.0
    # Network server: MQTT broker of the network server's integration (8883 is the usual TLS
    # port). The client is gateway/mqtt/subscriber.py (gmqtt).
    mqtt_host: str = "127.0.0.1"
    mqtt_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    mqtt_username: str = ""
    mqtt_password: str = ""
    # "" derives a stable one, eg-<gateway id>-<driver name>: the persistent session is found
    # again by it after a restart. Two gateways on one broker must not share it.
    mqtt_client_id: Annotated[str, msgspec.Meta(max_length=128)] = ""
    mqtt_qos: Literal[0, 1, 2] = 1
    # "3.1.1" (every network server's broker speaks it) or "5".
    mqtt_protocol: Literal["3.1.1", "5"] = "3.1.1"
    # false (default): a persistent session: the broker queues QoS 1 uplinks while the gateway
    # is away (restart, link down) and delivers them when it is back. true: they are lost.
    mqtt_clean_session: bool = False
    # MQTT 5: seconds the broker keeps the session after a disconnect (3.1.1: the broker's own
    # setting, e.g. Mosquitto's persistent_client_expiration).
    mqtt_session_expiry: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] = 86_400
    # Seconds between keepalive pings; a broker silent for twice this is a lost connection.
    mqtt_keepalive: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    # TLS: on with mqtt_tls = true; mqtt_ca_file is the CA bundle that signed the broker's
    # certificate ("" = the system store); mqtt_cert_file + mqtt_key_file add a client
    # certificate (mTLS). mqtt_tls_insecure skips the host name check (brokers reached by IP).
    mqtt_tls: bool = False
    mqtt_ca_file: str = ""
    mqtt_cert_file: str = ""
    mqtt_key_file: str = ""
    mqtt_tls_insecure: bool = False
    # Topic filters: ChirpStack v4 (and v3.x) event/up, older ChirpStack v3 /rx, The Things Stack v3.
    mqtt_topics: list[str] = msgspec.field(
        default_factory=lambda: ["application/+/device/+/event/up", "application/+/device/+/rx", "v3/+/devices/+/up"]
    )
    # Uplink JSON flavour: "auto" tells them apart by their keys.
    format: Literal["auto", "chirpstack_v4", "chirpstack_v3", "tts_v3"] = "auto"
    # Use the network server's decoded object when present (else decode the payload here).
    use_network_decoded: bool = True
    # Codec for devices without one of their own ("" = such devices give link quality only).
    default_codec: str = ""
    # Device profiles by name: [drivers.profiles.<name>] codec = "...".
    profiles: dict[str, Profile] = msgspec.field(default_factory=dict)
    # Known devices ([[drivers.devices]]); required in concentrator mode (keys), optional otherwise.
    devices: list[Device] = msgspec.field(default_factory=list)

    def validate(self) -> list[str]:
        problems: list[str] = []
        problems += self._validate_mqtt()
        if self.mode == "concentrator" and not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}", self.listen):
            problems.append(f"listen: expected host:port, found {self.listen!r}")
        for key in ("default_codec",):
            value = getattr(self, key)
            if value and value not in CODEC_NAMES:
                problems.append(f"{key}: expected one of {', '.join(CODEC_NAMES)}, found {value!r}")
        for name, profile in self.profiles.items():
            if profile.codec not in CODEC_NAMES:
                problems.append(f"profiles.{name}.codec: expected one of {', '.join(CODEC_NAMES)}, found {profile.codec!r}")
        seen: set[str] = set()
        for i, device in enumerate(self.devices):
            where = f"devices[{i}]"
            eui = device.dev_eui.lower()
            if eui in seen:
                problems.append(f"{where}.dev_eui: expected a unique DevEUI, found {device.dev_eui!r} twice")
            seen.add(eui)
            if device.codec and device.codec not in CODEC_NAMES:
                problems.append(f"{where}.codec: expected one of {', '.join(CODEC_NAMES)}, found {device.codec!r}")
            if device.profile and device.profile not in self.profiles:
                problems.append(f"{where}.profile: expected one of the profiles {sorted(self.profiles)}, found {device.profile!r}")
            if device.activation == "abp":
                for key in ("dev_addr", "nwk_skey", "app_skey"):
                    if not getattr(device, key):
                        problems.append(f"{where}.{key}: expected a value for an ABP device, found nothing")
            elif device.activation == "otaa" and not device.app_key:
                problems.append(f"{where}.app_key: expected 32 hex digits for an OTAA device, found nothing")
            elif device.activation == "none" and self.mode == "concentrator":
                problems.append(f"{where}.activation: expected \"abp\" or \"otaa\" in concentrator mode, found \"none\"")
        return problems

    def _validate_mqtt(self) -> list[str]:
        problems: list[str] = []
        if bool(self.mqtt_cert_file) != bool(self.mqtt_key_file):
            problems.append("mqtt_cert_file: expected mqtt_cert_file and mqtt_key_file together, "
                            f"found {self.mqtt_cert_file!r} and {self.mqtt_key_file!r}")
        if not self.mqtt_tls:
            for key in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file", "mqtt_tls_insecure"):
                if getattr(self, key):
                    problems.append(f"{key}: expected mqtt_tls = true with it, found mqtt_tls = false")
        if self.mqtt_password and not self.mqtt_username:
            problems.append('mqtt_password: expected an mqtt_username with it, found ""')
        return problems

    def mqtt_client_id_for(self, gateway_id: str, driver_name: str) -> str:
        """The configured client id, else one derived from the gateway id and driver name."""
        return self.mqtt_client_id or f"eg-{gateway_id}-{driver_name}"

    def codec_for(self, dev_eui: str) -> str:
        """Device codec, else its profile's, else the default ("" = none)."""
        for device in self.devices:
            if device.dev_eui.lower() == dev_eui:
                if device.codec:
                    return device.codec
                if device.profile:
                    return self.profiles[device.profile].codec
                break
        return self.default_codec


    def split_channels_for(self, dev_eui: str) -> bool:
        """True when every channel of the device is its own series (`channels = "split"`)."""
        for device in self.devices:
            if device.dev_eui.lower() == dev_eui:
                if device.channels:
                    return device.channels == "split"
                if device.profile:
                    return self.profiles[device.profile].channels == "split"
                break
        return False
