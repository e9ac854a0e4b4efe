"""Pure OCPP-J decoding: text frames and CALL payloads in, readings or `OcppDecodeError` out.

No clock, socket or global state: the receive time and the transaction-to-connector map come in
as arguments. Payloads are the wire's camelCase dicts, exactly as the charge point sent them, so
the proxy (which never re-serialises) and the endpoint share this code.

Device ids (design.md, Readings): `ocpp:<charge-point-id>/<unit>` where the unit is
- OCPP 1.6: the connectorId (0 = the whole charge point, 1.6 section 4.9 / 7.7);
- OCPP 2.0.1: the evseId (0 = the whole charging station, 2.0.1 Part 2 section 2.2), for meter
  values and status alike; a StatusNotification for connector 2 or higher of one EVSE (rare:
  an EVSE charges one vehicle at a time) goes to `<evse>-<connector>` so it cannot overwrite
  connector 1's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import msgspec

from gateway.errors import DecodeError
from gateway.model import Event, Reading, Severity

__all__ = [
    "CALL",
    "CALLERROR",
    "CALLRESULT",
    "DECODERS",
    "STATUS_SEVERITY",
    "Frame",
    "OcppDecodeError",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "call_error_frame",
    "decode_call",
    "encode_frame",
    "device_id",
    "meter_readings",
    "parse_frame",
    "parse_time",
    "status_event",
    "transaction_unit",
    "unit_for_status",
]

CALL: Final = 2
CALLRESULT: Final = 3
CALLERROR: Final = 4

V16: Final = "1.6"
V201: Final = "2.0.1"


class OcppDecodeError(DecodeError):
    """A frame or payload from a charge point that cannot be turned into readings."""


class Frame(NamedTuple):
    """One OCPP-J message (1.6 JSON section 4.1, 2.0.1 Part 4 section 4.1)."""

    kind: int  # CALL, CALLRESULT or CALLERROR
    message_id: str
    action: str  # "" unless a CALL
    payload: Any  # CALL/CALLRESULT payload; for a CALLERROR [code, description, details]


_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode

# Message ids are at most 36 characters (2.0.1 Part 4 section 4.1.3 "MessageId").
_MAX_MESSAGE_ID = 36
# Deepest nesting a frame may have. The deepest OCPP 1.6/2.0.1 message (a 2.0.1
# SetChargingProfile: frame > payload > profile > schedule > period list > period, plus
# customData) nests under 12 levels; 32 leaves room for vendors' customData and keeps every later
# walk of the payload (validation, logging) far from Python's recursion limit.
MAX_DEPTH: Final = 32
# Largest frame parse_frame accepts; the transport refuses larger ones first (max_message_bytes,
# at most 16 MiB in the config), this bounds callers that get text another way.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024


def _too_deep(message: Any) -> bool:
    """True if containers nest deeper than MAX_DEPTH (iterative: no recursion on field data)."""
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, (list, dict)):
                stack.append((child, depth + 1))
    return False


def _decode_json(text: str | bytes) -> Any:
    """JSON text to Python values, with the size and depth caps; OcppDecodeError otherwise."""
    if len(text) > MAX_FRAME_BYTES:
        raise OcppDecodeError("too_large", f"{len(text)} bytes")
    try:
        message = _json_decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise OcppDecodeError("not_json", str(error)[:80]) from None
    except RecursionError:  # msgspec's own guard, far deeper than MAX_DEPTH
        raise OcppDecodeError("too_deep", f"nesting deeper than {MAX_DEPTH}") from None
    # Cheap pre-test: fewer opening brackets than the cap cannot nest deeper than it.
    if isinstance(message, (list, dict)):
        brackets = text.count("[") + text.count("{") if isinstance(text, str) else (
            text.count(b"[") + text.count(b"{"))
        if brackets > MAX_DEPTH and _too_deep(message):
            raise OcppDecodeError("too_deep", f"nesting deeper than {MAX_DEPTH}")
    return message


def parse_frame(text: str | bytes) -> Frame:
    """Split a frame into its parts; raises OcppDecodeError with cause and, if readable, id."""
    message = _decode_json(text)
    if not isinstance(message, list) or len(message) < 3:
        raise OcppDecodeError("not_an_rpc_array", "expected [type, id, ...]")
    kind, message_id = message[0], message[1]
    if not isinstance(message_id, str) or not 0 < len(message_id) <= _MAX_MESSAGE_ID:
        raise OcppDecodeError("bad_message_id", repr(message_id)[:40])
    if kind == CALL:
        if len(message) != 4 or not isinstance(message[2], str) or not isinstance(message[3], dict):
            raise OcppDecodeError("bad_call", message_id)
        return Frame(CALL, message_id, message[2], message[3])
    if kind == CALLRESULT:
        if len(message) != 3 or not isinstance(message[2], dict):
            raise OcppDecodeError("bad_callresult", message_id)
        return Frame(CALLRESULT, message_id, "", message[2])
    if kind == CALLERROR:
        if len(message) != 5 or not isinstance(message[2], str):
            raise OcppDecodeError("bad_callerror", message_id)
        return Frame(CALLERROR, message_id, "", message[2:])
    raise OcppDecodeError("bad_message_type", f"{kind!r} (id {message_id})")


def readable_message_id(text: str | bytes) -> str:
    """The message id of a broken frame when it can still be read, else "-1".

    2.0.1 Part 4 section 4.2.3: a CALLERROR answering a message whose id cannot be read carries
    the id "-1".
    """
    try:
        message = _decode_json(text)
    except OcppDecodeError:
        return "-1"
    if isinstance(message, list) and len(message) > 1 and isinstance(message[1], str):
        if 0 < len(message[1]) <= _MAX_MESSAGE_ID:
            return message[1]
    return "-1"


def encode_frame(message: list[Any]) -> str:
    """A frame as compact JSON text (OCPP-J frames are WebSocket text messages)."""
    return _json_encode(message).decode()


def call_error_frame(message_id: str, code: str, description: str, details: dict[str, Any]) -> str:
    """A CALLERROR frame: [4, id, errorCode, errorDescription, errorDetails]."""
    # errorDescription is at most 255 characters (2.0.1 Part 4 section 4.2.3).
    return _json_encode([CALLERROR, message_id, code, description[:255], details]).decode()


def parse_time(text: Any) -> float:
    """ISO 8601 date-time (with Z, an offset, or none meaning UTC) to Unix seconds."""
    if not isinstance(text, str):
        raise OcppDecodeError("bad_timestamp", repr(text)[:40])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OcppDecodeError("bad_timestamp", text[:40]) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def device_id(charge_point: str, unit: int | str) -> str:
    return f"ocpp:{charge_point}/{unit}"


def unit_for_status(version: str, payload: Mapping[str, Any]) -> str:
    """The device unit of a StatusNotification (see the module docstring)."""
    if version == V16:
        return str(int(payload["connectorId"]))
    evse, connector = int(payload["evseId"]), int(payload["connectorId"])
    return str(evse) if connector <= 1 else f"{evse}-{connector}"


# ---------------------------------------------------------------- measurands and units
# OCPP 1.6 section 7.31 "Measurand", 2.0.1 Part 2 section 3.55 "MeasurandEnumType".
# measurand -> (catalog metric, how per-phase values combine when no phase-less total is sent).
# sum: power and energy add over L1..L3; max: current of the most loaded phase;
# first: voltage of L1 (L1-N), as phases of a single-phase charge point may read 0.
MEASURANDS: Final[dict[str, tuple[str, str]]] = {
    "Energy.Active.Import.Register": ("energy_active_import_register", "sum"),
    "Energy.Active.Export.Register": ("energy_active_export_register", "sum"),
    "Power.Active.Import": ("power_active_import", "sum"),
    "Power.Offered": ("power_offered", "sum"),
    "Current.Import": ("current_import", "max"),
    "Current.Offered": ("current_offered", "max"),
    "Voltage": ("voltage", "first"),
    "Frequency": ("frequency", "first"),
    "Power.Factor": ("power_factor", "first"),
    "SoC": ("state_of_charge", "first"),
    "Temperature": ("temperature", "first"),  # 1.6 only; 2.0.1 dropped this measurand
}
# The measurand when a sampled value names none (1.6 section 7.43, 2.0.1 SampledValueType).
DEFAULT_MEASURAND: Final = "Energy.Active.Import.Register"

# OCPP unit spelling -> (catalog unit, scale, offset): catalog value = value * scale + offset.
# 1.6 section 7.45 "UnitOfMeasure"; 2.0.1 Part 2 Appendix 2 "Standardized Units of Measure".
UNITS: Final[dict[str, tuple[str, float, float]]] = {
    "Wh": ("Wh", 1.0, 0.0),
    "kWh": ("Wh", 1000.0, 0.0),
    "W": ("W", 1.0, 0.0),
    "kW": ("W", 1000.0, 0.0),
    "A": ("A", 1.0, 0.0),
    "V": ("V", 1.0, 0.0),
    "Hz": ("Hz", 1.0, 0.0),
    "Percent": ("%", 1.0, 0.0),
    "Celsius": ("Cel", 1.0, 0.0),
    "Fahrenheit": ("Cel", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "K": ("Cel", 1.0, -273.15),
}
# The unit a sampled value without one is in: the catalog unit, spelled the OCPP way.
DEFAULT_UNIT: Final[dict[str, str]] = {
    "Wh": "Wh", "W": "W", "A": "A", "V": "V", "Hz": "Hz", "%": "Percent", "Cel": "Celsius", "/": "",
}
_CATALOG_UNIT: Final[dict[str, str]] = {
    "energy_active_import_register": "Wh",
    "energy_active_export_register": "Wh",
    "power_active_import": "W",
    "power_offered": "W",
    "current_import": "A",
    "current_offered": "A",
    "voltage": "V",
    "frequency": "Hz",
    "power_factor": "/",
    "state_of_charge": "%",
    "temperature": "Cel",
}
_PHASES: Final = ("L1", "L2", "L3")


def _number(raw: Any) -> float:
    # 1.6 sends the value as a string (section 7.43), 2.0.1 as a number (SampledValueType).
    if isinstance(raw, bool):
        raise OcppDecodeError("bad_value", repr(raw))
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise OcppDecodeError("bad_value", raw[:40]) from None
    else:
        raise OcppDecodeError("bad_value", repr(raw)[:40])
    if not math.isfinite(value):
        raise OcppDecodeError("bad_value", repr(raw)[:40])
    return value


def _convert(version: str, metric: str, sample: Mapping[str, Any]) -> float:
    value = _number(sample["value"])
    multiplier = 0
    if version == V16:
        unit = sample.get("unit")
    else:
        measure = sample.get("unitOfMeasure") or {}
        unit = measure.get("unit")
        multiplier = measure.get("multiplier", 0)
        if not isinstance(multiplier, int) or isinstance(multiplier, bool) or abs(multiplier) > 9:
            raise OcppDecodeError("bad_multiplier", repr(multiplier)[:20])
    catalog_unit = _CATALOG_UNIT[metric]
    if unit is None:
        unit = DEFAULT_UNIT[catalog_unit]
    if catalog_unit == "/":
        if unit not in ("", None):
            raise OcppDecodeError("unit_mismatch", f"{metric} in {unit!r}")
        return value * 10.0**multiplier
    row = UNITS.get(unit) if isinstance(unit, str) else None
    if row is None or row[0] != catalog_unit:
        raise OcppDecodeError("unit_mismatch", f"{metric} in {unit!r}")
    # 2.0.1 UnitOfMeasureType: value x 10^multiplier is in `unit`.
    return (value * 10.0**multiplier) * row[1] + row[2]


def meter_readings(version: str, device: str, meter_values: Any) -> list[Reading]:
    """MeterValue[] (1.6 section 7.32, 2.0.1 MeterValueType) to readings at each timestamp."""
    if not isinstance(meter_values, list):
        raise OcppDecodeError("malformed_payload", "meterValue is not a list", device=device)
    readings: list[Reading] = []
    for meter_value in meter_values:
        ts = parse_time(meter_value["timestamp"])
        totals: dict[str, float] = {}
        phased: dict[str, dict[str, float]] = {}
        for sample in meter_value["sampledValue"]:
            if sample.get("format") == "SignedData":  # 1.6: a signed blob, not a number
                continue
            row = MEASURANDS.get(sample.get("measurand", DEFAULT_MEASURAND))
            if row is None:
                continue  # a measurand the catalog has no metric for (reactive energy, RPM)
            metric = row[0]
            value = _convert(version, metric, sample)
            phase = sample.get("phase")
            if phase is None:
                totals[metric] = value
            elif isinstance(phase, str) and phase[:2] in _PHASES:
                phased.setdefault(metric, {}).setdefault(phase[:2], value)
        for metric, values in phased.items():
            if metric in totals:
                continue
            rule = _RULES[metric]
            totals[metric] = rule(values)
        readings.extend(Reading(device, metric, value, ts) for metric, value in totals.items())
    return readings


def _first(values: dict[str, float]) -> float:
    return values[min(values)]


_COMBINE: Final[dict[str, Callable[[dict[str, float]], float]]] = {
    "sum": lambda values: sum(values.values()),
    "max": lambda values: max(values.values()),
    "first": _first,
}
_RULES: Final[dict[str, Callable[[dict[str, float]], float]]] = {
    metric: _COMBINE[rule] for metric, rule in MEASURANDS.values()
}


# ---------------------------------------------------------------- status
# A connector going to one of these is also a priority event (issue 4; 1.6 section 7.7,
# 2.0.1 ConnectorStatusEnumType). Everything else is only a state reading.
STATUS_SEVERITY: Final[dict[str, Severity]] = {
    "Faulted": Severity.ALARM,
    "Unavailable": Severity.WARNING,
}


def status_event(reading: Reading, previous: str | None, detail: dict[str, str]) -> Event | None:
    """The priority event for a status reading, if it is a change to Faulted/Unavailable."""
    severity = STATUS_SEVERITY.get(str(reading.value))
    if severity is None or previous == reading.value:
        return None
    return Event(
        device=reading.device,
        ts=reading.ts,
        name="connector_status",
        severity=severity,
        metric="connector_status",
        value=reading.value,
        detail=detail,
    )


# ---------------------------------------------------------------- CALLs from the charge point
def _status_16(cp: str, payload: Any, received: float, tx: Mapping[str, str]) -> list[Reading]:
    # 1.6 section 6.47: timestamp is optional; without it the receive time stands in.
    ts = parse_time(payload["timestamp"]) if "timestamp" in payload else received
    status = payload["status"]
    if not isinstance(status, str):
        raise OcppDecodeError("bad_status", repr(status)[:40])
    return [Reading(device_id(cp, unit_for_status(V16, payload)), "connector_status", status, ts)]


def _status_201(cp: str, payload: Any, received: float, tx: Mapping[str, str]) -> list[Reading]:
    ts = parse_time(payload["timestamp"])  # required in 2.0.1 (StatusNotificationRequest)
    status = payload["connectorStatus"]
    if not isinstance(status, str):
        raise OcppDecodeError("bad_status", repr(status)[:40])
    return [Reading(device_id(cp, unit_for_status(V201, payload)), "connector_status", status, ts)]


def _meter_values_16(cp: str, payload: Any, received: float, tx: Mapping[str, str]) -> list[Reading]:
    return meter_readings(V16, device_id(cp, int(payload["connectorId"])), payload["meterValue"])


def _meter_values_201(cp: str, payload: Any, received: float, tx: Mapping[str, str]) -> list[Reading]:
    return meter_readings(V201, device_id(cp, int(payload["evseId"])), payload["meterValue"])


def _start_16(cp: str, payload: Any, received: float, tx: Mapping[str, str]) -> list[Reading]:
    # 1.6 section 6.45: meterStart is the register in Wh at the start.
    device = device_id(cp, int(payload["connectorId"]))
    value = _number(payload["meterStart"])
    return [Reading(device, "energy_active_import_register", value, parse_time(payload["timestamp"]))]


def _stop_16(cp: str, payload: Any, received: float, tx: Mapping[str, str]) -> list[Reading]:
    # 1.6 section 6.49: no connectorId; the transaction's connector comes from StartTransaction.
    unit = tx.get(str(payload["transactionId"]))
    if unit is None:
        raise OcppDecodeError("unknown_transaction", str(payload["transactionId"])[:40])
    device = device_id(cp, unit)
    readings = meter_readings(V16, device, payload.get("transactionData") or [])
    value = _number(payload["meterStop"])
    readings.append(Reading(device, "energy_active_import_register", value, parse_time(payload["timestamp"])))
    return readings


def transaction_unit(payload: Mapping[str, Any]) -> str | None:
    """The EVSE of a 2.0.1 TransactionEvent when it names one (only the first must)."""
    evse = payload.get("evse")
    if isinstance(evse, dict) and "id" in evse:
        return str(int(evse["id"]))
    return None


def _transaction_201(cp: str, payload: Any, received: float, tx: Mapping[str, str]) -> list[Reading]:
    # 2.0.1 E01-E15: evse is required in the first TransactionEvent of a transaction only.
    unit = transaction_unit(payload) or tx.get(str(payload["transactionInfo"]["transactionId"]))
    if unit is None:
        raise OcppDecodeError("unknown_transaction", "TransactionEvent without a known evse")
    if "meterValue" not in payload:
        return []
    return meter_readings(V201, device_id(cp, unit), payload["meterValue"])


Decoder = Callable[[str, Any, float, Mapping[str, str]], list[Reading]]

# version -> action -> decoder; actions absent here carry no readings.
DECODERS: Final[dict[str, dict[str, Decoder]]] = {
    V16: {
        "StatusNotification": _status_16,
        "MeterValues": _meter_values_16,
        "StartTransaction": _start_16,
        "StopTransaction": _stop_16,
    },
    V201: {
        "StatusNotification": _status_201,
        "MeterValues": _meter_values_201,
        "TransactionEvent": _transaction_201,
    },
}


def decode_call(
    version: str,
    charge_point: str,
    action: str,
    payload: Any,
    received: float,
    transactions: Mapping[str, str] | None = None,
) -> list[Reading]:
    """Readings carried by one CALL from a charge point.

    `transactions` maps transaction ids to device units (for 1.6 StopTransaction and 2.0.1
    TransactionEvents after the first). Anything malformed raises OcppDecodeError, never another
    exception: in proxy mode nothing upstream has validated the payload.
    """
    decoder = DECODERS.get(version, {}).get(action)
    if decoder is None:
        return []
    device = device_id(charge_point, "?")
    try:
        return decoder(charge_point, payload, received, transactions or {})
    except OcppDecodeError as error:
        if error.device is None:
            error.device = device
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as error:
        raise OcppDecodeError(
            "malformed_payload", f"{action}: {type(error).__name__} {error}"[:120], device=device
        ) from None
