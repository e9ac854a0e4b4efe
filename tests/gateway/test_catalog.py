"""The open catalog: catalog rows, forwarded names, the registry, and windows that use it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import model
from gateway.cli import main as cli_main
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.model import CATALOG, Kind, Reading, admit_forwarded, configure_metrics, forwarded_name
from gateway.windows import Aggregator, finalize

T0 = 1_767_225_600
BASE = {"gateway": {"id": "gw-1", "state_dir": "/tmp/x"}, "drivers": [{"type": "replay", "path": "a.csv"}]}


@pytest.fixture(autouse=True)
def _no_configured_metrics() -> Iterator[None]:
    configure_metrics({})
    yield
    configure_metrics({})


def test_catalog_names_units_and_kinds_are_well_formed() -> None:
    for name, row in CATALOG.items():
        assert row.name == name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        # no catalog name can ever be taken by a forwarded or configured one
        assert not name.startswith(model.FORWARD_PREFIX), name
        assert re.fullmatch(r"[!-~]{1,16}", row.unit), (name, row.unit)
        assert row.kind in (Kind.GAUGE, Kind.COUNTER, Kind.STATE)
        assert row.description
    assert CATALOG["movement_count"].wrap == 256.0


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("temperatureSensor.3", "x_temperature_sensor_3"),
        ("PM2.5 (ug/m3)", "x_pm2_5_ug_m3"),
        ("Ext_sensor", "x_ext_sensor"),
        ("gpsLocation", "x_gps_location"),
        ("temp°C", "x_temp_c"),
        ("x_already_forwarded", "x_already_forwarded"),
        ("--", "x_unnamed"),
        ("a" * 100, "x_" + "a" * 62),
    ],
)
def test_forwarded_name_rule(key: str, name: str) -> None:
    assert forwarded_name(key) == name
    assert model.FORWARDED_NAME.fullmatch(name) and len(name) <= model.MAX_NAME_LENGTH


def test_forwarded_metric_is_a_gauge_with_its_unit_and_config_wins() -> None:
    reading = Reading("lora:01", "x_soil_ec", 1.5, T0)
    assert admit_forwarded(reading, "dS/m") is reading
    assert model.lookup("x_soil_ec") == model.Metric("x_soil_ec", "dS/m", Kind.GAUGE, "forwarded outside the catalog")
    configure_metrics({"x_soil_ec": ("mS/cm", Kind.GAUGE), "x_valve": ("/", Kind.STATE)})
    assert model.metric("x_soil_ec").unit == "mS/cm"  # a configured row replaces the guess
    # a number for a configured state becomes its text; text for a gauge is refused
    assert admit_forwarded(Reading("d", "x_valve", 1.0, T0)) == Reading("d", "x_valve", "1", T0)
    assert admit_forwarded(Reading("d", "x_valve", "open", T0)).value == "open"  # type: ignore[union-attr]
    assert admit_forwarded(Reading("d", "x_soil_ec", "wet", T0)) == "unknown_metric_not_numeric"
    # a later config without the row forgets it
    configure_metrics({})
    assert model.lookup("x_valve") is None


def test_the_registry_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "MAX_EXTRA_METRICS", len(model.extra_metrics()) + 1)
    assert admit_forwarded(Reading("d", "x_bounded_one", 1.0, T0)) != "unknown_metric_limit"
    assert admit_forwarded(Reading("d", "x_bounded_two", 1.0, T0)) == "unknown_metric_limit"
    # a name already known still passes
    assert admit_forwarded(Reading("d", "x_bounded_one", 2.0, T0)) != "unknown_metric_limit"


def test_windows_aggregate_forwarded_and_configured_metrics_and_finalize_finds_units() -> None:
    configure_metrics({"x_flow_total": ("m3", Kind.COUNTER), "x_valve": ("/", Kind.STATE)})
    assert admit_forwarded(Reading("d", "x_ozone_raw", 0.0, T0), "ppb") != "unknown_metric_limit"
    agg = Aggregator(window=60, now=T0)
    agg.add(Reading("d", "x_ozone_raw", 10.0, T0 + 1))
    agg.add(Reading("d", "x_ozone_raw", 30.0, T0 + 2))
    agg.add(Reading("d", "temperature", 20.0, T0 + 2))
    agg.add_many([("d", "x_flow_total", 100.0, T0 + 3), ("d", "x_flow_total", 104.5, T0 + 50)])
    agg.add_many([("d", "x_valve", "closed", T0 + 0), ("d", "x_valve", "open", T0 + 30)])
    agg.add(Reading("d", "x_never_registered", 1.0, T0 + 4))
    agg.add_many([("d", "x_never_registered", 1.0, T0 + 5)])
    assert agg.stats.unknown_metric == 2 and agg.stats.accepted == 7
    closed = agg.flush_all().closed
    records = {key[1]: finalize(key[0], key[1], start, 60, acc) for start, key, acc in closed}
    assert set(records) == {"x_ozone_raw", "temperature", "x_flow_total", "x_valve"}
    ozone = records["x_ozone_raw"]
    assert (ozone.unit, ozone.kind, ozone.count, ozone.min, ozone.max, ozone.mean) == ("ppb", "gauge", 2, 10.0, 30.0, 20.0)
    flow = records["x_flow_total"]
    assert (flow.unit, flow.kind, flow.first, flow.last, flow.delta) == ("m3", "counter", 100.0, 104.5, 4.5)
    valve = records["x_valve"]
    assert (valve.kind, valve.last, valve.transitions, valve.durations) == ("state", "open", 1, {"closed": 30.0, "open": 30.0})
    # a configured state series is carried and shows in keyframes like a catalog one
    assert [key for key, _, _ in agg.carried_states()] == [("d", "x_valve")]


def test_finalize_of_a_restored_metric_not_met_again_has_an_empty_unit() -> None:
    acc = [0, 1, 2.0, 2.0, 2.0, 2.0, float(T0), True]
    assert finalize("d", "x_not_seen_since_restart", T0, 60, acc).unit == ""


def test_config_metrics_section_is_validated_with_clear_messages() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "metrics": {
            "flow": {"unit": "l/s"},
            "x_Flow": {"unit": "l/s"},
            "x_a": {"kind": "gauge"},
            "x_b": {"unit": "V", "kind": "counters"},
            "x_c": {"unit": "V", "scale": 2},
            "x_d": {"unit": "V V"},
            "x_e": 3,
        }})
    assert info.value.problems == [
        "metrics.flow: expected a name like x_<lower_case_words> (x_ then a-z, 0-9 and single "
        "underscores, at most 64 characters), found 'flow'",
        "metrics.x_Flow: expected a name like x_<lower_case_words> (x_ then a-z, 0-9 and single "
        "underscores, at most 64 characters), found 'x_Flow'",
        "metrics.x_a.unit: required key is missing",
        "metrics.x_b.kind: expected one of 'gauge', 'counter', 'state', found 'counters'",
        "metrics.x_c.scale: unknown key (check the spelling; see config/gateway.example.toml)",
        'metrics.x_d.unit: expected a unit symbol, 1 to 16 printable ASCII characters without '
        'spaces (SenML where one exists: "Cel", "ug/m3", "/"), found \'V V\'',
        "metrics.x_e: expected a table with unit and kind, found 3",
    ]


def test_config_metrics_are_registered_and_gauge_is_the_default_kind() -> None:
    config = parse_config({**BASE, "metrics": {"x_flow": {"unit": "l/s"}, "x_mode": {"unit": "/", "kind": "state"}}})
    assert {name: (row.unit, row.kind) for name, row in config.metrics.items()} == {
        "x_flow": ("l/s", "gauge"), "x_mode": ("/", "state")}
    assert model.metric("x_flow").kind == Kind.GAUGE and model.metric("x_mode").kind == Kind.STATE


def test_check_config_reports_a_bad_metrics_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[gateway]\nid = "gw"\n[[drivers]]\ntype = "replay"\npath = "a.csv"\n'
        '[metrics.x_flow]\nunit = "l/s"\nkind = "rate"\n'
    )
    assert cli_main(["check-config", str(path)]) == 2
    assert "metrics.x_flow.kind: expected one of 'gauge', 'counter', 'state', found 'rate'" in capsys.readouterr().err
