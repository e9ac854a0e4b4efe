"""What flows through the gateway: readings, priority events, and the metric catalog.

Every metric a driver may emit is one row in `CATALOG`; the row fixes its unit (SenML symbol,
RFC 8428 section 12.1 and the SenML units registry) and its kind, which decides how windows
aggregate it. A new sensor type that measures something new is a new row here.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

__all__ = [
    "CATALOG",
    "Event",
    "Kind",
    "Metric",
    "Reading",
    "Severity",
    "metric",
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
        return CATALOG[self.metric].kind


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

# name, unit, kind, description. Units are SenML symbols where one exists; "ppb", "mm" and
# "mm/h", "deg" and "lx" are the registry's or common practice where SenML has none.
_ROWS: Final[tuple[tuple[str, str, Kind, str], ...]] = (
    # climate
    ("temperature", "Cel", _G, "air or device temperature"),
    ("temperature_external", "Cel", _G, "temperature of an external probe (cable sensor)"),
    ("humidity", "%RH", _G, "relative humidity"),
    ("pressure", "Pa", _G, "barometric pressure"),
    ("dew_point", "Cel", _G, "dew point"),
    ("co2", "ppm", _G, "carbon dioxide concentration"),
    ("tvoc", "ppb", _G, "total volatile organic compounds"),
    ("voc_index", "/", _G, "VOC index (dimensionless)"),
    ("tvoc_mass", "ug/m3", _G, "total volatile organic compounds, mass concentration"),
    ("pm1_0", "ug/m3", _G, "particulate matter up to 1.0 um"),
    ("pm2_5", "ug/m3", _G, "particulate matter up to 2.5 um"),
    ("pm4_0", "ug/m3", _G, "particulate matter up to 4.0 um"),
    ("pm10", "ug/m3", _G, "particulate matter up to 10 um"),
    ("illuminance", "lx", _G, "illuminance"),
    ("uv_index", "/", _G, "UV index"),
    ("sound_level", "dB", _G, "sound pressure level"),
    ("wind_speed", "m/s", _G, "wind speed (average)"),
    ("wind_speed_min", "m/s", _G, "wind speed (lull)"),
    ("wind_speed_max", "m/s", _G, "wind speed (gust)"),
    ("wind_direction", "deg", _G, "wind direction (average)"),
    ("wind_direction_min", "deg", _G, "wind direction (minimum)"),
    ("wind_direction_max", "deg", _G, "wind direction (maximum)"),
    ("rain_total", "mm", _C, "accumulated rainfall"),
    ("rain_duration", "s", _C, "accumulated rain duration"),
    ("rain_intensity", "mm/h", _G, "rain intensity"),
    ("hail_total", "hits/cm2", _C, "accumulated hail"),
    ("hail_duration", "s", _C, "accumulated hail duration"),
    ("hail_intensity", "hits/cm2/h", _G, "hail intensity"),
    ("heating_temperature", "Cel", _G, "heating element temperature"),
    ("acceleration_x", "m/s2", _G, "acceleration, x axis"),
    ("acceleration_y", "m/s2", _G, "acceleration, y axis"),
    ("acceleration_z", "m/s2", _G, "acceleration, z axis"),
    ("movement_count", "/", _C, "movement counter"),
    ("pulse_count", "/", _C, "pulse counter input"),
    ("motion", "/", _G, "motion detected (0/1)"),
    ("occupancy", "/", _G, "occupancy (0/1)"),
    ("door_open", "/", _G, "door or window open (0/1)"),
    ("water_leak", "/", _G, "water leak detected (0/1)"),
    ("distance", "m", _G, "distance"),
    # device health and link
    ("battery", "%", _G, "battery level"),
    ("battery_voltage", "V", _G, "battery voltage"),
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
    ("voltage", "V", _G, "AC or DC voltage"),
    ("frequency", "Hz", _G, "AC frequency"),
    ("power_factor", "/", _G, "power factor"),
    ("state_of_charge", "%", _G, "vehicle battery state of charge"),
)

CATALOG: Final[dict[str, Metric]] = {
    name: Metric(name=name, unit=unit, kind=kind, description=text)
    for name, unit, kind, text in _ROWS
}


def metric(name: str) -> Metric:
    """Look up a catalog row; a name outside the catalog is a programming error."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"metric {name!r} is not in the catalog (gateway/model.py)") from None
