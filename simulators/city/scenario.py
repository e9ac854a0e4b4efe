"""The scenario file: which devices a district has, how often they report, which faults when.

A scenario is one TOML file, decoded into typed settings with msgspec like the gateway's own
config (gateway/config.py) and checked the same way: every problem is reported with its key
path, what was expected and what was found, all at once.

`--scale S` multiplies every device count (never intervals or faults), so scale 1 is the file as
written and the reference city (config/scenarios/reference.toml) at scale 100 is a hundred of it.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import ConfigError
from gateway.validation import describe_error

__all__ = [
    "BleGroup",
    "ChargePointGroup",
    "BrokerRestart",
    "CityConfig",
    "DiskFull",
    "Fault",
    "GatewayKill",
    "GatewayTerm",
    "LoRaWANGroup",
    "Scenario",
    "SerialGroup",
    "load_scenario",
    "parse_scenario",
]

Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
At = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]

LORA_FAMILIES = ("cayenne_lpp", "dragino_lht65", "elsys", "milesight", "decentlab_dl_sht35")
BLE_FORMATS = ("ruuvi5", "ruuvi3", "bthome", "bthome_air", "bthome_enc", "pvvx", "atc1441")


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class CityConfig(_Table, kw_only=True):
    # Shown in the report and used as the gateway id ("city-<name>").
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")] = "city"
    # How long the devices report, seconds (the run adds a few seconds to settle and drain).
    duration: Seconds = 60.0
    # Gateway windows: length (s), grace (s), max lateness (s).
    window: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 10
    grace: Annotated[float, msgspec.Meta(ge=0, le=600)] = 2.0
    max_lateness: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 600.0
    # "file": JSON Lines in the state folder, read back for the report (no server at all);
    # "mqtt": a local Mosquitto started by the runner and the platform receiver on it.
    uplink: Literal["file", "mqtt"] = "file"
    # MQTT uplink: who acknowledges a batch, the broker's PUBACK or the platform itself
    # (the uplink's `ack`; "platform" makes the receiver acknowledge on <prefix>/<gateway>/ack).
    mqtt_ack: Literal["broker", "platform"] = "broker"
    # Seconds between checkpoints of the gateway's open windows (a SIGKILL loses at most this).
    checkpoint: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    # Outbox bound in bytes (small values make long outages evict batches).
    outbox_max_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024)] = 64 * 1024 * 1024
    # Window records per batch (the gateway's outbox.batch_max_records; a bound under 128 kB
    # needs small batches, see `edge-gateway check-config`).
    batch_max_records: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    seed: int = 1


class LoRaWANGroup(_Table, kw_only=True):
    # "concentrator": virtual packet forwarders -> the gateway's Semtech UDP server;
    # "network_server": uplink JSON published to the runner's Mosquitto (needs no other server).
    mode: Literal["concentrator", "network_server"] = "concentrator"
    # Sensors in this group at scale 1, spread evenly over `families`.
    count: Count
    families: list[Literal[LORA_FAMILIES]] = msgspec.field(default_factory=lambda: list(LORA_FAMILIES))  # type: ignore[valid-type]
    # Seconds between two uplinks of one sensor.
    interval: Seconds = 300.0
    # Concentrator: packet forwarders that hear every frame (copies the gateway must collapse).
    gateways: Annotated[int, msgspec.Meta(ge=1, le=8)] = 2
    # Every n-th sensor joins by OTAA (0: all ABP).
    otaa_every: Annotated[int, msgspec.Meta(ge=0)] = 2


class SerialGroup(_Table, kw_only=True):
    # "modbus": XY-MD02 units on an RS-485 bus; "sds011": particulate sensor; "wxt": weather station.
    kind: Literal["modbus", "sds011", "wxt"]
    # Serial ports (pty pairs) at scale 1.
    ports: Count
    # Modbus only: units per bus.
    units_per_port: Annotated[int, msgspec.Meta(ge=1, le=247)] = 8
    # Seconds between readings: modbus poll interval, SDS011 active period, WXT automatic period.
    interval: Seconds = 60.0


class BleGroup(_Table, kw_only=True):
    # Tags at scale 1, spread evenly over `formats`.
    count: Count
    formats: list[Literal[BLE_FORMATS]] = msgspec.field(default_factory=lambda: list(BLE_FORMATS))  # type: ignore[valid-type]
    # Seconds between advertisements; each measurement is advertised `repeats` times.
    interval: Seconds = 1.0
    repeats: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    # At most this many tags after --scale (0: no cap). One gateway's adapter hears a few
    # hundred tags at most; a bigger district has more gateways, not a bigger radio range.
    max_count: Count = 0


class ChargePointGroup(_Table, kw_only=True):
    count: Count
    connectors: Annotated[int, msgspec.Meta(ge=1, le=16)] = 2
    version: Literal["1.6", "2.0.1"] = "1.6"
    # Seconds between session steps (each step sends status and/or meter values per connector).
    interval: Seconds = 60.0
    fault_probability: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.02


class UplinkOutage(_Table, tag="uplink_outage", tag_field="kind", kw_only=True):
    # mqtt: the broker stops; file: the output folder becomes unwritable.
    at: At
    duration: Seconds


class Corruption(_Table, tag="corrupt", tag_field="kind", kw_only=True):
    # Frames damaged on the wire (bad MIC / bad checksum) with probability `rate`, for `duration`.
    at: At
    duration: Seconds
    rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1
    target: Literal["lorawan", "serial", "all"] = "all"


class SerialUnplug(_Table, tag="serial_unplug", tag_field="kind", kw_only=True):
    at: At
    # Seconds until the cable is back.
    duration: Seconds = 5.0
    # Ports pulled (the first ones of the city).
    ports: Annotated[int, msgspec.Meta(ge=1)] = 1


class BleStall(_Table, tag="ble_stall", tag_field="kind", kw_only=True):
    # The scanner stops delivering until the gateway restarts it ("scanner") or power-cycles the
    # adapter ("adapter").
    at: At
    mode: Literal["scanner", "adapter"] = "scanner"


class ChargePointDisconnect(_Table, tag="cp_disconnect", tag_field="kind", kw_only=True):
    # Connections dropped abruptly; the charge points reconnect on their next message.
    at: At
    count: Annotated[int, msgspec.Meta(ge=1)] = 10


class ClockJump(_Table, tag="clock_jump", tag_field="kind", kw_only=True):
    # The gateway's wall clock steps by this many seconds (an NTP step), for real: the gateway
    # runs with an offset clock that the runner moves.
    at: At
    seconds: float = 120.0


class DiskFull(_Table, tag="disk_full", tag_field="kind", kw_only=True):
    # The gateway's state folder is a tmpfs of `size_mib` the run mounts itself; at `at` a filler
    # file takes every free byte, and `duration` seconds later it is deleted.
    at: At
    duration: Seconds = 4.0
    size_mib: Annotated[int, msgspec.Meta(ge=4, le=4096)] = 32


class GatewayKill(_Table, tag="gateway_kill", tag_field="kind", kw_only=True):
    # The gateway process gets SIGKILL; the runner starts it again `down` seconds later.
    at: At
    down: Seconds = 2.0


class GatewayTerm(_Table, tag="gateway_term", tag_field="kind", kw_only=True):
    # The gateway process gets SIGTERM (a clean stop, under load); the runner starts it again
    # `down` seconds after it exited.
    at: At
    down: Seconds = 2.0


class BrokerRestart(_Table, tag="broker_restart", tag_field="kind", kw_only=True):
    # mqtt uplink only: the platform's broker runs without persistence and is restarted, empty,
    # after `down` seconds (whatever it held or had acknowledged is gone).
    at: At
    down: Seconds = 3.0


Fault = (UplinkOutage | Corruption | SerialUnplug | BleStall | ChargePointDisconnect | ClockJump | DiskFull | GatewayKill
         | GatewayTerm | BrokerRestart)
FAULT_KINDS = ("uplink_outage", "corrupt", "serial_unplug", "ble_stall", "cp_disconnect", "clock_jump", "disk_full",
               "gateway_kill", "gateway_term", "broker_restart")


class Scenario(_Table, kw_only=True):
    city: CityConfig = msgspec.field(default_factory=CityConfig)
    lorawan: list[LoRaWANGroup] = msgspec.field(default_factory=list)
    serial: list[SerialGroup] = msgspec.field(default_factory=list)
    ble: list[BleGroup] = msgspec.field(default_factory=list)
    charge_points: list[ChargePointGroup] = msgspec.field(default_factory=list)
    faults: list[Fault] = msgspec.field(default_factory=list)

    def scaled(self, scale: float) -> Scenario:
        """Every device count times `scale` (rounded up, so no group vanishes)."""
        if scale == 1:
            return self

        def up(n: int) -> int:
            return math.ceil(n * scale) if n else 0

        return msgspec.structs.replace(
            self,
            lorawan=[msgspec.structs.replace(g, count=up(g.count)) for g in self.lorawan],
            serial=[msgspec.structs.replace(g, ports=up(g.ports)) for g in self.serial],
            ble=[msgspec.structs.replace(g, count=min(up(g.count), g.max_count) if g.max_count else up(g.count))
                 for g in self.ble],
            charge_points=[msgspec.structs.replace(g, count=up(g.count)) for g in self.charge_points],
        )

    def climate_sensors(self) -> int:
        serial = sum(g.ports * (g.units_per_port if g.kind == "modbus" else 1) for g in self.serial)
        return sum(g.count for g in self.lorawan) + serial + sum(g.count for g in self.ble)

    def charge_point_count(self) -> int:
        return sum(g.count for g in self.charge_points)

    def needs_broker(self) -> bool:
        return self.city.uplink == "mqtt" or any(g.mode == "network_server" and g.count for g in self.lorawan)

    def problems(self) -> list[str]:
        out: list[str] = []
        total_ble_per_format: dict[str, int] = {}
        for i, group in enumerate(self.ble):
            if not group.formats:
                out.append(f"ble[{i}].formats: expected at least one format, found none")
                continue
            per = math.ceil(group.count / len(group.formats))
            for fmt in group.formats:
                total_ble_per_format[fmt] = total_ble_per_format.get(fmt, 0) + per
        for fmt, n in total_ble_per_format.items():
            if n > 0xFE * 256:
                out.append(f"ble: expected at most {0xFE * 256} tags of format {fmt!r} (two MAC bytes), found {n}")
        for i, lora in enumerate(self.lorawan):
            if not lora.families:
                out.append(f"lorawan[{i}].families: expected at least one codec family, found none")
        for i, fault in enumerate(self.faults):
            if fault.at >= self.city.duration:
                out.append(f"faults[{i}].at: expected less than city.duration ({self.city.duration}), found {fault.at}")
            if isinstance(fault, BrokerRestart) and self.city.uplink != "mqtt":
                out.append(f"faults[{i}].kind: broker_restart needs city.uplink = \"mqtt\", found {self.city.uplink!r}")
        if sum(isinstance(f, DiskFull) for f in self.faults) > 1:
            out.append("faults: expected at most one disk_full (one tmpfs per run), found more")
        if self.climate_sensors() + self.charge_point_count() == 0:
            out.append("(top level): expected at least one device group, found none")
        return out


def parse_scenario(raw: dict[str, Any], *, scale: float = 1.0) -> Scenario:
    try:
        scenario = msgspec.convert(raw, Scenario, strict=True)
    except msgspec.ValidationError as error:
        message = describe_error(error, raw, "", Scenario).replace("config/gateway.example.toml", "config/scenarios/reference.toml")
        if ".kind: expected Invalid value" in message:  # an unknown fault kind (the union's tag)
            found = message.rsplit("found ", 1)[1]
            message = f"{message.split(': ', 1)[0]}: expected one of {', '.join(map(repr, FAULT_KINDS))}, found {found}"
        raise ConfigError([message]) from None
    scenario = scenario.scaled(scale)
    problems = scenario.problems()
    if problems:
        raise ConfigError(problems)
    return scenario


def load_scenario(path: str | Path, *, scale: float = 1.0) -> Scenario:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError([f"{path}: cannot read ({error.strerror or error})"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML ({error})"]) from None
    try:
        return parse_scenario(raw, scale=scale)
    except ConfigError as error:
        raise ConfigError([f"{path}: {p}" for p in error.problems]) from None
