"""The pure decoder: published frames, unit and multiplier rules, and robustness."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ocpp.decode import (
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    OcppDecodeError,
    call_error_frame,
    decode_call,
    parse_frame,
    parse_time,
    readable_message_id,
    status_event,
)
from gateway.model import CATALOG, Reading, Severity
from tests.drivers.ocpp.vectors import VECTORS


@pytest.mark.parametrize("case", VECTORS, ids=[v["source"][:40] for v in VECTORS])
def test_published_vectors(case: dict) -> None:
    readings = decode_call(case["version"], case["charge_point"], case["action"], case["payload"], 0.0)
    got = sorted((r.device, r.metric, r.value, r.ts) for r in readings)
    want = sorted(case["expected"])
    assert len(got) == len(want)
    for (d, m, v, t), (d2, m2, v2, t2) in zip(got, want, strict=True):
        assert (d, m) == (d2, m2)
        assert v == pytest.approx(v2)
        assert t == pytest.approx(t2)
    for reading in readings:
        assert reading.metric in CATALOG


def test_published_frame_through_parse_frame() -> None:
    case = VECTORS[1]
    text = json.dumps([2, "msg-001", "MeterValues", case["payload"]])
    frame = parse_frame(text)
    assert (frame.kind, frame.message_id, frame.action) == (2, "msg-001", "MeterValues")
    assert len(decode_call("2.0.1", "CS1", frame.action, frame.payload, 0.0)) == 2


@pytest.mark.parametrize(
    ("version", "sample", "metric", "value"),
    [
        # 1.6 section 7.45 UnitOfMeasure: kWh/kW scale by 1000; temperatures convert to Cel.
        ("1.6", {"value": "1.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
         "energy_active_import_register", 1500.0),
        ("1.6", {"value": "98.6", "measurand": "Temperature", "unit": "Fahrenheit"}, "temperature", 37.0),
        ("1.6", {"value": "300.15", "measurand": "Temperature", "unit": "K"}, "temperature", 27.0),
        ("1.6", {"value": "55", "measurand": "SoC", "unit": "Percent"}, "state_of_charge", 55.0),
        ("1.6", {"value": "0.98", "measurand": "Power.Factor"}, "power_factor", 0.98),
        ("1.6", {"value": "49.9", "measurand": "Frequency"}, "frequency", 49.9),
        ("1.6", {"value": "32", "measurand": "Current.Offered", "unit": "A"}, "current_offered", 32.0),
        # 2.0.1 UnitOfMeasureType: value x 10^multiplier.
        ("2.0.1", {"value": 12.5, "measurand": "Energy.Active.Import.Register",
                   "unitOfMeasure": {"unit": "Wh", "multiplier": 3}}, "energy_active_import_register", 12500.0),
        ("2.0.1", {"value": 115, "measurand": "Power.Active.Import",
                   "unitOfMeasure": {"unit": "W", "multiplier": 2}}, "power_active_import", 11500.0),
        ("2.0.1", {"value": 21.5, "measurand": "Temperature", "unitOfMeasure": {"unit": "Celsius"}},
         "temperature", 21.5),
        # no measurand: the energy register in Wh (both versions' default)
        ("2.0.1", {"value": 42}, "energy_active_import_register", 42.0),
    ],
)
def test_units_and_multipliers(version: str, sample: dict, metric: str, value: float) -> None:
    key = "connectorId" if version == "1.6" else "evseId"
    payload = {key: 2, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [sample]}]}
    (reading,) = decode_call(version, "X", "MeterValues", payload, 0.0)
    assert reading == Reading("ocpp:X/2", metric, pytest.approx(value), 1767225600.0)


def test_phases_combine_by_table() -> None:
    samples = [
        {"value": "3000", "measurand": "Power.Active.Import", "phase": "L1", "unit": "W"},
        {"value": "3100", "measurand": "Power.Active.Import", "phase": "L2", "unit": "W"},
        {"value": "2900", "measurand": "Power.Active.Import", "phase": "L3", "unit": "W"},
        {"value": "13", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "14", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
        {"value": "1", "measurand": "Current.Import", "phase": "N", "unit": "A"},
        {"value": "231", "measurand": "Voltage", "phase": "L2-N", "unit": "V"},
        {"value": "229", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
        {"value": "400", "measurand": "Voltage", "unit": "V"},  # a phase-less value wins
        {"value": "xyz", "measurand": "Energy.Active.Import.Register", "format": "SignedData"},
        {"value": "17", "measurand": "Energy.Reactive.Import.Register", "unit": "varh"},
    ]
    payload = {"connectorId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": samples}]}
    got = {r.metric: r.value for r in decode_call("1.6", "X", "MeterValues", payload, 0.0)}
    assert got == {"power_active_import": 9000.0, "current_import": 14.0, "voltage": 400.0}


def test_status_and_transactions() -> None:
    status16 = {"connectorId": 0, "errorCode": "NoError", "status": "Unavailable"}
    (reading,) = decode_call("1.6", "CP", "StatusNotification", status16, 123.0)
    assert reading == Reading("ocpp:CP/0", "connector_status", "Unavailable", 123.0)  # no timestamp
    status201 = {"timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Faulted", "evseId": 2, "connectorId": 2}
    (reading,) = decode_call("2.0.1", "CS", "StatusNotification", status201, 0.0)
    assert reading.device == "ocpp:CS/2-2"
    stop = {"meterStop": 2500, "timestamp": "2026-01-01T00:00:10Z", "transactionId": 7}
    with pytest.raises(OcppDecodeError) as error:
        decode_call("1.6", "CP", "StopTransaction", stop, 0.0)
    assert error.value.cause == "unknown_transaction"
    (reading,) = decode_call("1.6", "CP", "StopTransaction", stop, 0.0, {"7": "3"})
    assert reading == Reading("ocpp:CP/3", "energy_active_import_register", 2500.0, 1767225610.0)


def test_status_event_only_on_change_to_fault_or_unavailable() -> None:
    faulted = Reading("ocpp:CP/1", "connector_status", "Faulted", 5.0)
    event = status_event(faulted, "Charging", {})
    assert event is not None and event.severity is Severity.ALARM and event.value == "Faulted"
    assert status_event(faulted, "Faulted", {}) is None
    unavailable = Reading("ocpp:CP/1", "connector_status", "Unavailable", 5.0)
    assert status_event(unavailable, None, {}).severity is Severity.WARNING  # type: ignore[union-attr]
    assert status_event(Reading("ocpp:CP/1", "connector_status", "Charging", 5.0), "Faulted", {}) is None


@pytest.mark.parametrize(
    ("text", "cause", "message_id"),
    [
        ("{not json", "not_json", "-1"),
        ('{"a": 1}', "not_an_rpc_array", "-1"),
        ('[2, 17, "Heartbeat", {}]', "bad_message_id", "-1"),
        ('[2, "m1", "Heartbeat"]', "bad_call", "m1"),
        ('[2, "m1", "Heartbeat", []]', "bad_call", "m1"),
        ('[9, "m2", "Heartbeat", {}]', "bad_message_type", "m2"),
        ('[3, "m3", "x"]', "bad_callresult", "m3"),
    ],
)
def test_malformed_frames(text: str, cause: str, message_id: str) -> None:
    with pytest.raises(OcppDecodeError) as error:
        parse_frame(text)
    assert error.value.cause == cause
    assert readable_message_id(text) == message_id


def test_call_error_frame_shape() -> None:
    frame = json.loads(call_error_frame("-1", "FormationViolation", "x" * 300, {"cause": "not_json"}))
    assert frame[:3] == [4, "-1", "FormationViolation"] and len(frame[3]) == 255


def test_timestamps() -> None:
    assert parse_time("2026-01-01T00:00:00Z") == 1767225600.0
    assert parse_time("2026-01-01T01:00:00+01:00") == 1767225600.0
    assert parse_time("2026-01-01T00:00:00.250Z") == 1767225600.25
    assert parse_time("2026-01-01T00:00:00") == 1767225600.0  # no offset: UTC
    for bad in ("yesterday", 5, None, ""):
        with pytest.raises(OcppDecodeError):
            parse_time(bad)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(["connectorId", "evseId", "meterValue", "timestamp", "sampledValue", "value",
                         "measurand", "unit", "unitOfMeasure", "multiplier", "phase", "status",
                         "connectorStatus", "transactionId", "transactionInfo", "evse", "id",
                         "meterStart", "meterStop", "format", "transactionData"])
_payloads = st.recursive(
    st.none() | st.integers(-5, 5) | st.floats() | st.sampled_from(
        ["Wh", "kW", "Voltage", "SoC", "L1", "2026-01-01T00:00:00Z", "1.5", "nan", "Faulted"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=6),
    max_leaves=30,
)


@given(version=st.sampled_from(["1.6", "2.0.1"]),
       action=st.sampled_from(["StatusNotification", "MeterValues", "StartTransaction",
                               "StopTransaction", "TransactionEvent", "Heartbeat"]),
       payload=_payloads | _json)
def test_arbitrary_payloads_raise_only_decode_errors(version: str, action: str, payload: object) -> None:
    try:
        readings = decode_call(version, "CP", action, payload, 0.0, {"1": "1"})
    except OcppDecodeError:
        return
    for reading in readings:
        assert reading.metric in CATALOG
        assert isinstance(reading.value, str) or math.isfinite(reading.value)


@given(st.binary(max_size=64) | st.text(max_size=64) | _json.map(json.dumps))
def test_arbitrary_frames_raise_only_decode_errors(text: bytes | str) -> None:
    try:
        parse_frame(text)
    except OcppDecodeError:
        pass
    assert isinstance(readable_message_id(text), str)


@pytest.mark.parametrize("depth", [33, 1_000, 5_000, 100_000])
@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deep_nesting_is_a_decode_error(depth: int, opening: str) -> None:
    # issue 17: depth 5,000 fits in 64 KB and raised RecursionError, killing the session
    closing = "]" if opening == "[" else "}"
    inner = opening * depth + "1" + closing * depth
    for text in (inner, f'[2, "m1", "DataTransfer", {{"vendorId": "v", "data": {inner}}}]'):
        with pytest.raises(OcppDecodeError) as error:
            parse_frame(text)
        assert error.value.cause == "too_deep"
        assert readable_message_id(text) == "-1"


def test_nesting_up_to_the_cap_and_many_brackets_are_fine() -> None:
    nested = "[" * (MAX_DEPTH - 4) + "1" + "]" * (MAX_DEPTH - 4)  # frame > payload > 2 levels
    frame = parse_frame(f'[2, "m1", "DataTransfer", {{"vendorId": "v", "data": {nested}}}]')
    assert frame.action == "DataTransfer"
    wide = json.dumps([2, "m2", "MeterValues", {"connectorId": 1, "meterValue": [
        {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": str(n)} for n in range(500)]}]}])
    assert len(parse_frame(wide).payload["meterValue"][0]["sampledValue"]) == 500


def test_frames_over_the_size_cap_are_a_decode_error() -> None:
    text = '[2, "m1", "DataTransfer", {"vendorId": "v", "data": "' + "x" * MAX_FRAME_BYTES + '"}]'
    with pytest.raises(OcppDecodeError) as error:
        parse_frame(text)
    assert error.value.cause == "too_large"


_nested = st.recursive(st.integers() | st.text(max_size=3), lambda c: st.lists(c, max_size=2)
                       | st.dictionaries(st.text(max_size=2), c, max_size=2), max_leaves=200)


@given(st.integers(1, 3000), _nested)
def test_arbitrary_nesting_raises_only_decode_errors(depth: int, leaf: object) -> None:
    text = "[" * depth + json.dumps(leaf) + "]" * depth
    try:
        parse_frame(text)
    except OcppDecodeError:
        pass
    assert isinstance(readable_message_id(text), str)
