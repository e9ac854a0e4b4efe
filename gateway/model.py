"""What flows through the gateway: readings, priority events, and the metric catalog.

Every metric a driver may emit is one row in `CATALOG`; the row fixes its unit (SenML symbol,
RFC 8428 section 12.1 and the SenML units registry) and its kind, which decides how windows
aggregate it. A new sensor type that measures something new is a new row here.
"""

from __future__ import annotations

import enum
import re
from typing import Final

import msgspec

__all__ = [
    "CATALOG",
    "FORWARDED_NAME",
    "FORWARD_PREFIX",
    "MAX_EXTRA_METRICS",
    "MAX_NAME_LENGTH",
    "Event",
    "Kind",
    "Metric",
    "Reading",
    "Severity",
    "admit_forwarded",
    "configure_metrics",
    "extra_metric",
    "extra_metrics",
    "forwarded_name",
    "lookup",
    "metric",
    "register_forwarded",
]


class Kind(enum.IntEnum):
    """How a metric aggregates over a window (design.md, Readings)."""

    GAUGE = 0  # count, min, max, mean, last
    COUNTER = 1  # first, last, delta; resets and wraps detected
    STATE = 2  # last, transitions, seconds per state


class Metric(msgspec.Struct, frozen=True):
    name: str
    unit: str
    kind: Kind
    description: str
    # Counters that wrap at a fixed modulus (e.g. a 16-bit pulse count) declare it so a wrap is
    # told apart from a reset; 0 means the counter never wraps, any decrease is a reset.
    wrap: float = 0.0


class Reading(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One measured value at its event time.

    `device` carries a scheme prefix (`lora:<deveui>`, `ble:<mac>`, `serial:<port>/<unit>`,
    `ocpp:<charge-point-id>/<connector>`). `ts` is event time in Unix seconds: the device's own
    timestamp when the protocol carries one, else the time of reception. `value` is a float for
    gauges and counters and a string for states. Made once per reading, hence a gc-free Struct.
    """

    device: str
    metric: str
    value: float | str
    ts: float

    @property
    def kind(self) -> Kind:
        return metric(self.metric).kind


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """A priority event: forwarded at once besides being aggregated (a connector Faulted,
    a sensor alarm, a tag that stopped advertising)."""

    device: str
    ts: float
    name: str  # e.g. "connector_status", "sensor_alarm"
    severity: Severity = Severity.WARNING
    metric: str | None = None
    value: float | str | None = None
    detail: dict[str, str] = msgspec.field(default_factory=dict)


_G, _C, _S = Kind.GAUGE, Kind.COUNTER, Kind.STATE

# name, unit, kind, description. Units are SenML symbols (RFC 8428 section 12.1, RFC 8798)
# where one exists; "ppb", "mm", "mm/h", "deg", "deg/s", "lx", "hits/cm2" and "hits/cm2/h" are
# common practice where SenML has none. "/" is a dimensionless number (a ratio, a count, a 0/1
# flag). docs/metrics.md lists every row with the devices that produce it (a test keeps the two
# in step).
_ROWS: Final[tuple[tuple[str, str, Kind, str], ...]] = (
    # climate
    ("temperature", "Cel", _G, "air or device temperature"),
    ("temperature_external", "Cel", _G, "temperature of an external probe (cable sensor)"),
    ("temperature_ir_internal", "Cel", _G, "infrared thermometer, sensor's own temperature"),
    ("temperature_ir_external", "Cel", _G, "infrared thermometer, temperature of the target"),
    ("internal_temperature", "Cel", _G, "temperature inside the instrument's electronics"),
    ("humidity", "%RH", _G, "relative humidity"),
    ("pressure", "Pa", _G, "barometric pressure"),
    ("dew_point", "Cel", _G, "dew point"),
    # air quality
    ("co2", "ppm", _G, "carbon dioxide concentration"),
    ("co", "ppm", _G, "carbon monoxide concentration"),
    ("o3", "ppb", _G, "ozone concentration"),
    ("no2", "ppb", _G, "nitrogen dioxide concentration"),
    ("so2", "ppb", _G, "sulphur dioxide concentration"),
    ("h2s", "ppb", _G, "hydrogen sulphide concentration"),
    ("hcho", "ug/m3", _G, "formaldehyde, mass concentration"),
    ("tvoc", "ppb", _G, "total volatile organic compounds"),
    ("voc_index", "/", _G, "VOC index (dimensionless)"),
    ("tvoc_mass", "ug/m3", _G, "total volatile organic compounds, mass concentration"),
    ("pm1_0", "ug/m3", _G, "particulate matter up to 1.0 um"),
    ("pm2_5", "ug/m3", _G, "particulate matter up to 2.5 um"),
    ("pm4_0", "ug/m3", _G, "particulate matter up to 4.0 um"),
    ("pm10", "ug/m3", _G, "particulate matter up to 10 um"),
    # light and sound
    ("illuminance", "lx", _G, "illuminance"),
    ("light_visible_infrared", "/", _G, "visible plus infrared light, raw sensor count"),
    ("light_infrared", "/", _G, "infrared light, raw sensor count"),
    ("light_level", "/", _G, "light level on the device's own scale (Milesight 0..5, BTHome)"),
    ("uv_index", "/", _G, "UV index"),
    ("sound_level", "dB", _G, "sound pressure level (average)"),
    ("sound_level_peak", "dB", _G, "sound pressure level (peak)"),
    # weather
    ("wind_speed", "m/s", _G, "wind speed (average)"),
    ("wind_speed_min", "m/s", _G, "wind speed (lull)"),
    ("wind_speed_max", "m/s", _G, "wind speed (gust)"),
    ("wind_direction", "deg", _G, "wind direction (average)"),
    ("wind_direction_min", "deg", _G, "wind direction (minimum)"),
    ("wind_direction_max", "deg", _G, "wind direction (maximum)"),
    ("rain_total", "mm", _C, "accumulated rainfall"),
    ("rain_duration", "s", _C, "accumulated rain duration"),
    ("rain_intensity", "mm/h", _G, "rain intensity"),
    ("rain_intensity_peak", "mm/h", _G, "rain intensity, peak (one-minute running average)"),
    ("precipitation", "mm", _G, "precipitation reported by the device (amount as sent)"),
    ("hail_total", "hits/cm2", _C, "accumulated hail"),
    ("hail_duration", "s", _C, "accumulated hail duration"),
    ("hail_intensity", "hits/cm2/h", _G, "hail intensity"),
    ("hail_intensity_peak", "hits/cm2/h", _G, "hail intensity, peak"),
    ("heating_temperature", "Cel", _G, "heating element temperature"),
    ("heating_voltage", "V", _G, "voltage across the heating element"),
    ("reference_voltage", "V", _G, "instrument's internal reference voltage"),
    ("soil_moisture", "%", _G, "soil or material moisture"),
    # motion, position, presence
    ("acceleration", "m/s2", _G, "acceleration (single axis or magnitude)"),
    ("acceleration_x", "m/s2", _G, "acceleration, x axis"),
    ("acceleration_y", "m/s2", _G, "acceleration, y axis"),
    ("acceleration_z", "m/s2", _G, "acceleration, z axis"),
    ("angular_velocity", "deg/s", _G, "gyroscope, angular velocity"),
    ("angular_velocity_x", "deg/s", _G, "gyroscope, x axis"),
    ("angular_velocity_y", "deg/s", _G, "gyroscope, y axis"),
    ("angular_velocity_z", "deg/s", _G, "gyroscope, z axis"),
    ("rotation", "deg", _G, "rotation angle"),
    ("rotational_speed", "1/min", _G, "rotational speed"),
    ("latitude", "lat", _G, "GPS latitude, degrees north"),
    ("longitude", "lon", _G, "GPS longitude, degrees east"),
    ("altitude", "m", _G, "GPS altitude"),
    ("distance", "m", _G, "distance"),
    ("movement_count", "/", _C, "movement counter (cumulative, 8-bit)"),
    ("acceleration_events", "/", _G, "movements detected since the previous uplink"),
    ("motion_count", "/", _G, "PIR motion triggers since the previous uplink"),
    ("motion_activity", "/", _G, "PIR activity level on the device's own scale"),
    ("pulse_count", "/", _C, "pulse counter input (absolute)"),
    ("pulse_count_relative", "/", _G, "pulses since the previous uplink"),
    ("count", "/", _G, "a generic count the device reports"),
    ("motion", "/", _G, "motion detected (0/1)"),
    ("occupancy", "/", _G, "occupancy (0/1)"),
    ("occupancy_state", "/", _S, "occupancy (vacant, pending, occupied)"),
    ("door_open", "/", _G, "door or window open (0/1)"),
    ("water_leak", "/", _G, "water leak detected (0/1)"),
    ("button_event", "/", _S, "last button event (press, double_press, long_press, ...)"),
    ("dimmer_steps", "/", _G, "dimmer rotation in steps (negative: left)"),
    ("buzzer", "/", _G, "buzzer on (0/1)"),
    # binary sensors as sent (BTHome binary sensor objects; 1 = the class's "on" meaning)
    ("generic_boolean", "/", _G, "generic on/off (0/1)"),
    ("power_on", "/", _G, "power on (0/1)"),
    ("opening", "/", _G, "open (0/1)"),
    ("battery_low", "/", _G, "battery low (0/1)"),
    ("battery_charging", "/", _G, "battery charging (0/1)"),
    ("co_detected", "/", _G, "carbon monoxide detected (0/1)"),
    ("cold", "/", _G, "cold (0/1)"),
    ("connectivity", "/", _G, "connected (0/1)"),
    ("garage_door_open", "/", _G, "garage door open (0/1)"),
    ("gas_detected", "/", _G, "gas detected (0/1)"),
    ("heat", "/", _G, "hot (0/1)"),
    ("light_detected", "/", _G, "light detected (0/1)"),
    ("unlocked", "/", _G, "lock unlocked (0/1)"),
    ("moisture_detected", "/", _G, "moisture detected (0/1)"),
    ("moving", "/", _G, "moving (0/1)"),
    ("plugged_in", "/", _G, "plugged in (0/1)"),
    ("presence", "/", _G, "presence (0/1)"),
    ("problem", "/", _G, "problem reported (0/1)"),
    ("running", "/", _G, "running (0/1)"),
    ("safety", "/", _G, "BTHome safety flag as sent (0/1)"),
    ("smoke_detected", "/", _G, "smoke detected (0/1)"),
    ("sound_detected", "/", _G, "sound detected (0/1)"),
    ("tamper", "/", _G, "tampering detected (0/1)"),
    ("vibration", "/", _G, "vibration detected (0/1)"),
    ("window_open", "/", _G, "window open (0/1)"),
    # I/O
    ("digital_input", "/", _G, "digital input (0/1)"),
    ("digital_output", "/", _G, "digital output (0/1)"),
    ("analog_input", "/", _G, "analog input as sent (Cayenne LPP, 0.01 steps, no unit)"),
    ("analog_output", "/", _G, "analog output as sent (Cayenne LPP, 0.01 steps, no unit)"),
    ("analog_input_voltage", "V", _G, "analog input voltage"),
    # quantities of matter and flow
    ("mass", "kg", _G, "mass (weight scale)"),
    ("volume", "l", _G, "volume"),
    ("volume_storage", "l", _G, "volume held in storage"),
    ("volume_flow_rate", "l/s", _G, "volume flow rate"),
    ("gas_volume", "m3", _C, "gas meter register"),
    ("water_volume", "l", _C, "water meter register"),
    ("conductivity", "S/m", _G, "electrical conductivity"),
    ("duration", "s", _G, "a duration the device reports"),
    # electricity
    ("energy", "Wh", _C, "energy meter register"),
    ("power", "W", _G, "electric power"),
    ("current", "A", _G, "electric current"),
    # device health and link
    ("battery", "%", _G, "battery level"),
    ("battery_voltage", "V", _G, "battery voltage"),
    ("battery_status", "/", _S, "battery state as the device grades it (good, ok, low, ultra_low)"),
    ("supply_voltage", "V", _G, "supply voltage"),
    ("rssi", "dBm", _G, "received signal strength"),
    ("snr", "dB", _G, "signal-to-noise ratio"),
    ("tx_power", "dBm", _G, "transmit power"),
    ("sensor_status", "/", _S, "sensor status (ok, error, offline)"),
    # charge points (OCPP measurands mapped in drivers/ocpp)
    ("connector_status", "/", _S, "connector status (Available, Charging, Faulted, ...)"),
    ("power_active_import", "W", _G, "active power drawn by the vehicle"),
    ("power_offered", "W", _G, "maximum power offered to the vehicle"),
    ("energy_active_import_register", "Wh", _C, "energy meter register, import"),
    ("energy_active_export_register", "Wh", _C, "energy meter register, export"),
    ("current_import", "A", _G, "current drawn by the vehicle"),
    ("current_offered", "A", _G, "maximum current offered to the vehicle"),
    ("voltage", "V", _G, "AC or DC voltage (charge point, power meter)"),
    ("frequency", "Hz", _G, "AC frequency"),
    ("power_factor", "/", _G, "power factor"),
    ("state_of_charge", "%", _G, "vehicle battery state of charge"),
)

# Counters that wrap at a fixed modulus (a wrap is not a reset).
_WRAPS: Final[dict[str, float]] = {
    "movement_count": 256.0,  # Ruuvi RAWv2 movement counter, 8 bits
}

CATALOG: Final[dict[str, Metric]] = {
    name: Metric(name=name, unit=unit, kind=kind, description=text, wrap=_WRAPS.get(name, 0.0))
    for name, unit, kind, text in _ROWS
}


# -- metrics outside the catalog (docs/metrics.md, "Measurements outside the catalog") ---------
#
# A measurement the catalog has no row for (a key of a network server's decoded object, a Modbus
# register the user mapped) is not dropped: it travels under `x_<snake_case of its name>`, a
# gauge with its unit when the source says it, unless the config declares the name
# (`[metrics.x_<name>]` with unit and kind). The `x_` prefix keeps such names apart from
# catalog names, today's and future ones, and makes the name independent of the config, so the
# decoders that produce it stay pure. The registry below is per process: configured rows from
# the config, forwarded ones as drivers first meet them; bounded so a misbehaving codec cannot
# grow it without end.

FORWARD_PREFIX: Final = "x_"
# A forwarded or configured name: x_ then lower-case letters, digits and single underscores.
FORWARDED_NAME: Final = re.compile(r"^x_[a-z0-9]+(_[a-z0-9]+)*$")
MAX_NAME_LENGTH: Final = 64
MAX_EXTRA_METRICS: Final = 1000
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")

_extra: dict[str, Metric] = {}
_configured: set[str] = set()


def forwarded_name(key: str) -> str:
    """The name a measurement outside the catalog travels under: camelCase split into words,
    lower case, every run of other characters one underscore, `x_` in front (kept, not
    doubled, when the key already has it), cut to MAX_NAME_LENGTH. `temperatureSensor.3` ->
    `x_temperature_sensor_3`, `PM2.5 (ug/m3)` -> `x_pm2_5_ug_m3`."""
    words = _NOT_WORD.sub("_", _CAMEL.sub("_", key).lower()).strip("_") or "unnamed"
    name = words if words.startswith(FORWARD_PREFIX) else FORWARD_PREFIX + words
    return name[:MAX_NAME_LENGTH].rstrip("_")


def extra_metric(name: str) -> Metric | None:
    """A configured or forwarded metric by name (None when the process has not met it)."""
    return _extra.get(name)


def extra_metrics() -> dict[str, Metric]:
    """Every metric outside the catalog this process knows (a copy)."""
    return dict(_extra)


def lookup(name: str) -> Metric | None:
    """The catalog row, else the configured or forwarded one, else None."""
    return CATALOG.get(name) or _extra.get(name)


def configure_metrics(rows: dict[str, tuple[str, Kind]]) -> None:
    """Declare the config's `[metrics.<name>]` rows (name -> (unit, kind)); replaces what an
    earlier config declared. A configured row wins over a forwarded one of the same name."""
    for name in _configured - rows.keys():
        _extra.pop(name, None)
    _configured.clear()
    for name, (unit, kind) in rows.items():
        _extra[name] = Metric(name=name, unit=unit, kind=kind, description="configured ([metrics])")
        _configured.add(name)


def register_forwarded(name: str, unit: str = "") -> Metric | None:
    """The metric a forwarded measurement goes under: the configured row if there is one, else
    a gauge with `unit` ("" when unknown) registered on first sight. None when the registry is
    full (MAX_EXTRA_METRICS): the caller counts the measurement as dropped."""
    known = _extra.get(name)
    if known is not None:
        return known
    if len(_extra) >= MAX_EXTRA_METRICS:
        return None
    row = Metric(name=name, unit=unit, kind=Kind.GAUGE, description="forwarded outside the catalog")
    _extra[name] = row
    return row


def admit_forwarded(reading: Reading, unit: str = "") -> Reading | str:
    """A forwarded reading made fit for its metric's kind, or the cause it is refused for
    (`unknown_metric_limit`: the registry is full; `unknown_metric_not_numeric`: text for a
    gauge or counter). A number for a state becomes its text; a bool a number."""
    row = register_forwarded(reading.metric, unit)
    if row is None:
        return "unknown_metric_limit"
    value = reading.value
    if row.kind == Kind.STATE:
        if isinstance(value, str):
            return reading
        return Reading(reading.device, reading.metric, format(value, "g"), reading.ts)
    if isinstance(value, str):
        return "unknown_metric_not_numeric"
    return reading


def metric(name: str) -> Metric:
    """Look up a catalog, configured or forwarded row; any other name is a programming error."""
    row = CATALOG.get(name) or _extra.get(name)
    if row is None:
        raise KeyError(f"metric {name!r} is neither in the catalog (gateway/model.py) nor configured")
    return row
