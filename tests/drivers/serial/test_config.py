"""Config of the serial driver: the README sample parses; mistakes give precise messages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.config import Config, load_map
from gateway.config import parse_config
from gateway.errors import ConfigError

README = Path(__file__).resolve().parents[3] / "drivers" / "serial" / "README.md"


def _document(drivers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"gateway": {"id": "gw-1"}, "drivers": drivers}


def _problems(drivers: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(_document(drivers))
    return info.value.problems


def test_readme_sample_parses() -> None:
    (sample,) = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    raw = tomllib.loads('[gateway]\nid = "gw-1"\n' + sample)
    config = parse_config(raw)
    bus, pm, station = config.drivers
    assert isinstance(bus, Config) and bus.protocol == "modbus"
    assert bus.modbus is not None
    assert [d.unit for d in bus.modbus.devices] == [1, 7]
    assert [r.metric for r in bus.modbus.devices[0].all_registers()] == ["temperature", "humidity"]
    assert pm.protocol_settings().mode == "query"  # type: ignore[union-attr]
    assert station.protocol_settings().mode == "automatic"  # type: ignore[union-attr]


def test_defaults_for_a_protocol_without_its_table() -> None:
    config = parse_config(_document([{"type": "serial", "port": "/dev/ttyUSB0", "protocol": "wxt"}]))
    settings = config.drivers[0].protocol_settings()  # type: ignore[attr-defined]
    assert (settings.address, settings.mode) == ("0", "polled")


def test_shipped_xy_md02_map() -> None:
    registers = load_map("xy_md02")
    assert [(r.metric, r.function, r.address, r.type, r.scale) for r in registers] == [
        ("temperature", 4, 1, "int16", 0.1),
        ("humidity", 4, 2, "uint16", 0.1),
    ]


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        (
            {"protocol": "sds01"},
            "drivers[0].protocol: expected one of modbus, sds011, wxt, found 'sds01'",
        ),
        (
            {"protocol": "sds011", "wxt": {}},
            "drivers[0].wxt: expected no [wxt] table with protocol = 'sds011', found one",
        ),
        (
            {"protocol": "modbus"},
            "drivers[0].modbus.devices: expected at least one",
        ),
        (
            {"protocol": "modbus", "modbus": {"devices": [{"unit": 1, "map": "xy_md03"}]}},
            "drivers[0].modbus.devices[0].map: expected one of xy_md02, found 'xy_md03'",
        ),
        (
            {"protocol": "modbus", "modbus": {"devices": [{"unit": 1}]}},
            "drivers[0].modbus.devices[0]: expected `map` or [[registers]], found neither",
        ),
        (
            {"protocol": "modbus", "modbus": {"devices": [
                {"unit": 1, "map": "xy_md02"}, {"unit": 1, "map": "xy_md02"}]}},
            "drivers[0].modbus.devices[1].unit: expected a unique unit id, found 1 twice",
        ),
        (
            {"protocol": "modbus", "modbus": {"devices": [
                {"unit": 1, "registers": [{"metric": "temprature", "address": 0}]}]}},
            "drivers[0].modbus.devices[0].registers[0].metric: expected a catalog metric "
            "(docs/metrics.md) or x_<lower_case_words> to forward it outside the catalog, "
            "found 'temprature'",
        ),
        (
            {"protocol": "modbus", "modbus": {"devices": [
                {"unit": 1, "registers": [{"metric": "x_Flow", "address": 0}]}]}},
            "drivers[0].modbus.devices[0].registers[0].metric: expected a catalog metric",
        ),
        (
            {"protocol": "modbus", "modbus": {"devices": [
                {"unit": 1, "map": "xy_md02",
                 "registers": [{"metric": "humidity", "address": 9}]}]}},
            "expected each metric once per device, found 'humidity' twice",
        ),
        (
            {"protocol": "modbus", "modbus": {"devices": [{"unit": 0, "map": "xy_md02"}]}},
            "drivers[0].modbus.devices[0].unit: expected a whole number >= 1 and <= 247, found 0",
        ),
        (
            {"protocol": "wxt", "reopen_backoff_initial": 5.0, "reopen_backoff_max": 1.0},
            "drivers[0].reopen_backoff_max: expected >= reopen_backoff_initial (5.0), found 1.0",
        ),
        (
            {"protocol": "wxt", "wxt": {"addres": "1"}},
            "drivers[0].wxt.addres: unknown key",
        ),
    ],
)
def test_problems_are_precise(driver: dict[str, Any], expected: str) -> None:
    problems = _problems([{"type": "serial", "port": "/dev/ttyUSB0", **driver}])
    assert any(p.startswith(expected) or expected in p for p in problems), problems


def test_init_does_not_import_serial_or_pymodbus() -> None:
    import subprocess
    import sys

    code = (
        "import sys, drivers.serial, gateway.config; "
        "bad = [m for m in ('serial', 'pymodbus') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
