"""The scenario format: the shipped files load with the documented sizes; mistakes are named
with their key path, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from simulators.city.scenario import (
    BrokerRestart,
    ClockJump,
    Corruption,
    DiskFull,
    GatewayKill,
    GatewayTerm,
    load_scenario,
    parse_scenario,
)
from simulators.city.tomlout import to_toml

ROOT = Path(__file__).resolve().parents[2]


def test_reference_city_is_256_sensors_and_468_charge_points() -> None:
    city = load_scenario(ROOT / "config/scenarios/reference.toml")
    assert city.climate_sensors() == 256
    assert city.charge_point_count() == 468
    assert city.needs_broker()


def test_busy_city_has_the_reference_counts_and_the_test_faults() -> None:
    city = load_scenario(ROOT / "config/scenarios/busy.toml")
    assert (city.climate_sensors(), city.charge_point_count()) == (256, 468)
    assert {type(f).__name__ for f in city.faults} == {"Corruption", "ChargePointDisconnect", "UplinkOutage"}


def test_demo_needs_no_server() -> None:
    city = load_scenario(ROOT / "config/scenarios/demo.toml")
    assert not city.needs_broker()
    assert city.lorawan and city.serial and city.ble and city.charge_points


def test_scale_multiplies_device_counts_only() -> None:
    city = load_scenario(ROOT / "config/scenarios/reference.toml", scale=10)
    assert (city.climate_sensors(), city.charge_point_count()) == (2560, 4680)
    assert city.lorawan[0].interval == 300.0


def test_ble_tags_per_gateway_are_capped_at_scale() -> None:
    # scale 50: 12,800 climate sensors as written, but one adapter hears 500 tags, not 1,600
    city = load_scenario(ROOT / "config/scenarios/reference.toml", scale=50)
    assert [g.count for g in city.ble] == [500]
    assert (city.climate_sensors(), city.charge_point_count()) == (12_800 - 1_600 + 500, 23_400)
    assert [g.count for g in load_scenario(ROOT / "config/scenarios/reference.toml", scale=10).ble] == [320]


def test_faults_are_a_tagged_union() -> None:
    city = parse_scenario({
        "city": {"duration": 60},
        "ble": [{"count": 1}],
        "faults": [{"kind": "corrupt", "at": 1, "duration": 5, "rate": 0.5, "target": "lorawan"},
                   {"kind": "clock_jump", "at": 2, "seconds": -30}],
    })
    assert isinstance(city.faults[0], Corruption) and city.faults[0].rate == 0.5
    assert isinstance(city.faults[1], ClockJump) and city.faults[1].seconds == -30


def test_the_gateways_own_faults_parse_with_their_defaults() -> None:
    city = parse_scenario({
        "city": {"duration": 60, "uplink": "mqtt", "mqtt_ack": "platform", "checkpoint": 1.0},
        "ble": [{"count": 1}],
        "faults": [{"kind": "disk_full", "at": 1}, {"kind": "gateway_kill", "at": 2},
                   {"kind": "gateway_term", "at": 3, "down": 4}, {"kind": "broker_restart", "at": 5}],
    })
    disk, kill, term, broker = city.faults
    assert isinstance(disk, DiskFull) and (disk.duration, disk.size_mib) == (4.0, 32)
    assert isinstance(kill, GatewayKill) and isinstance(term, GatewayTerm) and isinstance(broker, BrokerRestart)
    assert (kill.down, term.down, broker.down) == (2.0, 4, 3.0)
    assert (city.city.mqtt_ack, city.city.checkpoint) == ("platform", 1.0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"city": {"duraton": 5}}, "city.duraton: unknown key"),
        ({"lorawan": [{"count": "many"}]}, "lorawan[0].count: expected `int`, found 'many'"),
        ({"lorawan": [{"count": 1, "mode": "gateway"}]}, "lorawan[0].mode: expected one of 'concentrator', 'network_server'"),
        ({"serial": [{"ports": 1}]}, "serial[0].kind: required key is missing"),
        ({"ble": [{"count": 1}], "faults": [{"kind": "flood", "at": 1}]}, "faults[0].kind: expected one of 'uplink_outage'"),
        ({"ble": [{"count": 1}], "faults": [{"kind": "corrupt", "at": 1, "duration": 2, "rate": 2}]},
         "faults[0].rate: expected `float` <= 1.0, found 2"),
        ({"city": {"duration": 10}, "ble": [{"count": 1}], "faults": [{"kind": "cp_disconnect", "at": 20}]},
         "faults[0].at: expected less than city.duration (10.0), found 20"),
        ({}, "expected at least one device group"),
        ({"ble": [{"count": 70000, "formats": ["pvvx"]}]}, "expected at most 65024 tags of format 'pvvx'"),
        ({"ble": [{"count": 1}], "faults": [{"kind": "broker_restart", "at": 1}]},
         'faults[0].kind: broker_restart needs city.uplink = "mqtt", found \'file\''),
        ({"ble": [{"count": 1}], "faults": [{"kind": "disk_full", "at": 1}, {"kind": "disk_full", "at": 2}]},
         "faults: expected at most one disk_full"),
        ({"ble": [{"count": 1}], "faults": [{"kind": "gateway_kill", "at": 1, "down": 0}]},
         "faults[0].down: expected `float` > 0.0, found 0"),
    ],
)
def test_mistakes_are_named(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(raw)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[city\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario(bad)
    assert str(bad) in caught.value.problems[0] and "not valid TOML" in caught.value.problems[0]


def test_written_gateway_config_is_valid_toml_for_the_gateway() -> None:
    import tomllib

    from gateway.config import parse_config

    document = {
        "gateway": {"id": "city-x", "state_dir": "/tmp/x"},
        "drivers": [{"type": "ble", "name": "ble-0", "bthome_keys": {"F0:CA:FE:00:BE:00": "00" * 16}}],
        "uplinks": [{"type": "file", "name": "file", "directory": "b\\c \"q\""}],
    }
    config = parse_config(tomllib.loads(to_toml(document, header="two\nlines")))
    assert config.drivers[0].bthome_keys == {"F0:CA:FE:00:BE:00": "00" * 16}
    assert config.uplinks[0].directory == "b\\c \"q\""
