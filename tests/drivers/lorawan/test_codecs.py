"""Codecs against the manufacturers' own published example payloads (vectors as data)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.lorawan.codecs import CODECS, Measurement
from drivers.lorawan.errors import LoRaWANDecodeError
from gateway.model import CATALOG

G = 9.80665

# (codec, fport, payload hex, expected measurements in catalog units, source). A measurement is
# (metric, value) or (metric, value, channel); value None = the device reports the sensor absent.
VECTORS = [
    ("cayenne_lpp", 1, "03670110056700FF", [("temperature", 27.2, 3), ("temperature", 25.5, 5)],
     "myDevices CayenneLPP README (github.com/myDevicesIoT/CayenneLPP), example 1: two temperature "
     "sensors on channels 3 and 5; also thethingsindustries.com/docs/integrations/payload-formatters/cayenne"),
    ("cayenne_lpp", 1, "0167FFD7067104D2FB2E0000",
     [("temperature", -4.1, 1), ("acceleration_x", 1.234 * G, 6), ("acceleration_y", -1.234 * G, 6),
      ("acceleration_z", 0.0, 6)],
     "myDevices CayenneLPP README, example 2 (-4.1 degC on channel 1; accelerometer 1.234, -1.234, 0 G "
     "on channel 6)"),
    ("cayenne_lpp", 1, "016601", [("occupancy", 1.0, 1)],
     "myDevices CayenneLPP README, data types table: Presence Sensor, IPSO 3302, LPP 102 (0x66), 1 byte, "
     "resolution 1; the catalog's occupancy is 0/1"),
    ("cayenne_lpp", 1, "076632", [("occupancy", 1.0, 7)],
     "as above with a presence byte of 50: still occupied = 1, never occupancy 50.0"),
    ("dragino_lht65", 2, "CBF60B0D0376010ADD7FFF",
     [("battery_voltage", 3.062), ("battery_status", "good"), ("temperature", 28.29), ("humidity", 88.6),
      ("temperature_external", 27.81)],
     "Dragino LHT65 User Manual section 2.4 (payload cbf6 0b0d 0376 01 0add 7fff: BAT 0x0BF6 mV, "
     "built-in 0x0B0D/100, humidity 0x0376/10=88.6 %, DS18B20 0x0ADD/100=27.81)"),
    ("dragino_lht65", 2, "CBA4F5C6025C01F54F7FFF",
     [("battery_voltage", 2.980), ("battery_status", "good"), ("temperature", -26.18), ("humidity", 60.4),
      ("temperature_external", -27.37)],
     "Dragino LHT65N manual section 2.4.2-2.4.6: BAT 0xCBA4&0x3FFF=2980 mV, temperature "
     "(0xF5C6-65536)/100=-26.18, humidity 0x025C/10=60.4 %, DS18B20 (0xF54F-65536)/100=-27.37"),
    ("dragino_lht65", 2, "CBF60B0D0376017FFF7FFF",
     [("battery_voltage", 3.062), ("battery_status", "good"), ("temperature", 28.29), ("humidity", 88.6),
      ("temperature_external", None)],
     "Dragino LHT65 manual section 2.4.6: Ext 0x01 without a probe reads 0x7FFF (327.67) = sensor absent"),
    ("elsys", 5, "0100E202290400270506060308070D62",
     [("temperature", 22.6), ("humidity", 41.0), ("illuminance", 39.0), ("motion_count", 6.0), ("co2", 776.0),
      ("battery_voltage", 3.426)],
     "Elsys payload example (elsys.se/en/elsys-payload; TheThingsNetwork/lorawan-devices vendor/elsys "
     "fixture: temperature 22.6, humidity 41, light 39, motion 6, co2 776, vdd 3426 mV)"),
    ("milesight", 85, "01755C03673401046865056A490006651C0079001400077DE704087D070009733F27",
     [("battery", 92.0), ("temperature", 30.8), ("humidity", 50.5), ("motion_activity", 73.0),
      ("illuminance", 28.0), ("light_visible_infrared", 121.0), ("light_infrared", 20.0), ("co2", 1255.0),
      ("tvoc", 7.0), ("pressure", 100470.0)],
     "Milesight-IoT/SensorDecoders AM100/README.md (AM104/AM107) example: battery 92, 30.8 degC, "
     "50.5 %RH, activity 73, illumination 28, infrared_and_visible 121, infrared 20, co2 1255, "
     "tvoc 7, pressure 1004.7 hPa"),
    ("milesight", 85, "0175640367180104686D077DC501",
     [("battery", 100.0), ("temperature", 28.0), ("humidity", 54.5), ("co2", 453.0)],
     "Milesight-IoT/SensorDecoders AM_Series/AM103/README.md example"),
    ("milesight", 85, "01756403671901046873057D670406736827",
     [("battery", 100.0), ("temperature", 28.1), ("humidity", 57.5), ("co2", 1127.0), ("pressure", 100880.0)],
     "Milesight-IoT/SensorDecoders EM_Series/EM500_Series/EM500-CO2/README.md example (1008.8 hPa)"),
    ("milesight", 85, "03671001046871057DCD0406735127",
     [("temperature", 27.2), ("humidity", 56.5), ("co2", 1229.0), ("pressure", 100650.0)],
     "milesight.com EM500-CO2 docs 'Uplink Data', periodic report example (1229 ppm, 1006.5 hPa)"),
    ("decentlab_dl_sht35", 1, "02030e000364a079b10c60",
     [("temperature", 175 * 25760 / 65535 - 45), ("humidity", 100 * 31153 / 65535), ("battery_voltage", 3.168)],
     "decentlab/decentlab-decoders DL-SHT35 example payload 1 (23.79 degC, 47.54 %, 3.168 V by "
     "Decentlab's conversion formulas)"),
    ("decentlab_dl_sht35", 1, "02030e00020c60", [("battery_voltage", 3.168)],
     "decentlab/decentlab-decoders DL-SHT35 example payload 2 (battery only)"),
]


@pytest.mark.parametrize(("codec", "fport", "payload", "expected", "source"), VECTORS,
                         ids=[f"{v[0]}-{i}" for i, v in enumerate(VECTORS)])
def test_published_examples(codec: str, fport: int, payload: str, expected: list[tuple[object, ...]],
                            source: str) -> None:
    got = CODECS[codec](bytes.fromhex(payload), fport)
    want = [Measurement(*row) for row in expected]  # type: ignore[arg-type]
    assert [(m.metric, m.channel) for m in got] == [(m.metric, m.channel) for m in want], source
    assert [m.value is None for m in got] == [m.value is None for m in want], source
    assert [m.value for m in got if m.value is not None] == pytest.approx(
        [m.value for m in want if m.value is not None], abs=1e-9), source


@pytest.mark.parametrize("fport", [1, 3, 5, 85])
def test_lht65_frame_on_another_port_is_a_counted_error(fport: int) -> None:
    # LHT65 manual section 2.4: readings come on FPort 2; 3 is the datalog, 5 the device status.
    with pytest.raises(LoRaWANDecodeError) as info:
        CODECS["dragino_lht65"](bytes.fromhex("CBF60B0D0376010ADD7FFF"), fport)
    assert info.value.cause == "unexpected_fport"


@pytest.mark.parametrize(("codec", "payload"), [
    ("cayenne_lpp", "0367"), ("cayenne_lpp", "03FF0110"), ("elsys", "01"), ("elsys", "FA00"),
    ("milesight", "0175"), ("milesight", "AA55"), ("dragino_lht65", "CBF6"), ("decentlab_dl_sht35", "01030e0003"),
])
def test_malformed_payloads_raise_codec_errors(codec: str, payload: str) -> None:
    with pytest.raises(LoRaWANDecodeError) as info:
        CODECS[codec](bytes.fromhex(payload), 2)
    assert info.value.cause.startswith("codec_")


@given(st.sampled_from(sorted(CODECS)), st.binary(max_size=80), st.sampled_from([None, 1, 2, 5, 85]))
def test_arbitrary_bytes_raise_only_decode_error(codec: str, payload: bytes, fport: int | None) -> None:
    try:
        result = CODECS[codec](payload, fport)
    except LoRaWANDecodeError:
        return
    assert all(isinstance(m.metric, str) and m.metric in CATALOG
               and (m.value is None or isinstance(m.value, float | int | str))
               and (m.channel is None or 0 <= m.channel <= 255) for m in result)


# Types of the tables without a published example frame (the sources give the layout only):
# each checked against its table row. (codec, payload hex, expected measurements)
LAYOUT_CASES = [
    ("cayenne_lpp", "0300" "01" "0401" "00" "050200C8" "0603FF38",
     [("digital_input", 1.0, 3), ("digital_output", 0.0, 4), ("analog_input", 2.0, 5), ("analog_output", -2.0, 6)]),
    # CayenneLPP README, GPS example (01 88 06765f f2960a 0003e8): 42.3519 deg, -87.9094 deg, 10 m
    ("cayenne_lpp", "018806765FF2960A0003E8",
     [("latitude", 42.3519, 1), ("longitude", -87.9094, 1), ("altitude", 10.0, 1)]),
    ("cayenne_lpp", "0286" "0064" "FF9C" "0000",
     [("angular_velocity_x", 1.0, 2), ("angular_velocity_y", -1.0, 2), ("angular_velocity_z", 0.0, 2)]),
    ("elsys", "0800C8" "0A0005" "0B00000010" "0C00FA" "0D01" "0F03" "1000FA0064" "1102" "15503C"
              "160002" "1700000020" "180190" "1900C8" "1A00" "1BFFFFFC18",
     [("analog_input_voltage", 0.2, 1), ("pulse_count_relative", 5.0, 1), ("pulse_count", 16.0, 1),
      ("temperature_external", 25.0, 1), ("digital_input", 1.0, 1), ("acceleration_events", 3.0, None),
      ("temperature_ir_internal", 25.0, None), ("temperature_ir_external", 10.0, None),
      ("occupancy_state", "occupied", None), ("sound_level_peak", 80.0, None), ("sound_level", 60.0, None),
      ("pulse_count_relative", 2.0, 2), ("pulse_count", 32.0, 2), ("analog_input_voltage", 0.4, 2),
      ("temperature_external", 20.0, 2), ("digital_input", 0.0, 2), ("analog_input_voltage", -0.001, 3)]),
    ("milesight", "0A7D0A00" "0D7D0300" "0E0101" "06CB03",
     [("hcho", 100.0), ("o3", 30.0), ("buzzer", 1.0), ("light_level", 3.0)]),
]


@pytest.mark.parametrize(("codec", "payload", "expected"), LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_table_rows_without_published_examples(codec: str, payload: str, expected: list[tuple[object, ...]]) -> None:
    got = CODECS[codec](bytes.fromhex(payload), 2)
    want = [Measurement(*row) for row in expected]  # type: ignore[arg-type]
    assert [(m.metric, m.channel) for m in got] == [(m.metric, m.channel) for m in want]
    for g, w in zip(got, want, strict=True):
        assert g.value == (w.value if isinstance(w.value, str) else pytest.approx(w.value, abs=1e-9)), g.metric


def test_elsys_occupancy_outside_its_table_is_absent() -> None:
    assert CODECS["elsys"](bytes.fromhex("1107"), 5) == [Measurement("occupancy_state", None)]
