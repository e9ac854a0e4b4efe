"""WXT5xx messages against Vaisala's user guide examples; units; '#' markers; hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial import wxt
from drivers.serial.errors import SerialDecodeError
from gateway.model import CATALOG
from tests.drivers.serial.vectors import WXT530_QUERY_MESSAGES, WXT_CRC, WXT_MESSAGES


@pytest.mark.parametrize(("line", "source", "address", "expected", "invalid", "problems"), WXT_MESSAGES)
def test_published_messages(
    line: bytes, source: str, address: str, expected: dict, invalid: int, problems: list
) -> None:
    message = wxt.decode_line(line, "ttyUSB1", 100.0)
    assert message.address == address, source
    got = {r.metric: r.value for r in message.readings}
    assert got == pytest.approx(expected), source
    assert message.invalid == invalid
    assert [p.cause for p in message.problems] == problems
    assert all(r.device == "serial:ttyUSB1/0" and r.ts == 100.0 for r in message.readings)
    assert all(r.metric in CATALOG for r in message.readings)


@pytest.mark.parametrize(("line", "source", "expected", "skipped"), WXT530_QUERY_MESSAGES)
def test_wxt530_query_examples_every_field(
    line: bytes, source: str, expected: dict, skipped: list[str]
) -> None:
    """Every field of the published aR1/aR2/aR3/aR5 examples is either forwarded with its
    exact value or one of the known fields without a catalog row, never silently unknown."""
    message = wxt.decode_line(line, "ttyUSB1", 100.0)
    got = {r.metric: r.value for r in message.readings}
    assert got == pytest.approx(expected), source
    assert len(message.readings) == len(expected)  # one reading per forwarded field
    assert message.invalid == 0 and message.problems == []
    codes = [item.split("=")[0].strip() for item in line.decode().strip().split(",")[1:]]
    assert [c for c in codes if c not in wxt.FIELDS] == skipped, source
    assert set(skipped) <= wxt.SKIPPED
    assert all(wxt.FIELDS[c][0] in CATALOG for c in codes if c in wxt.FIELDS)


@pytest.mark.parametrize(("body", "expected"), WXT_CRC)
def test_published_crc(body: bytes, expected: str) -> None:
    assert wxt.crc(body) == expected


def test_bad_crc_rejects_the_line() -> None:
    with pytest.raises(SerialDecodeError) as info:
        wxt.decode_line(b"0r1,Sn=0.1M,Sm=0.1M,Sx=0.2MGOG", "p", 0.0)
    assert info.value.cause == "crc_mismatch"


# (field, unit char, value, metric, expected value in the catalog unit)
UNITS = [
    ("Sm", "M", 10.0, "wind_speed", 10.0),
    ("Sm", "K", 36.0, "wind_speed", 10.0),
    ("Tp", "C", 31.5, "internal_temperature", 31.5),
    ("Tp", "F", 50.0, "internal_temperature", 10.0),
    ("Rp", "I", 1.0, "rain_intensity_peak", 25.4),
    ("Hp", "M", 2.0, "hail_intensity_peak", 2.0),
    ("Vh", "V", 12.1, "heating_voltage", 12.1),  # heating on, full power
    ("Vh", "W", 12.1, "heating_voltage", 12.1),  # heating on, half power
    ("Vh", "F", 12.1, "heating_voltage", 12.1),  # failsafe heating
    ("Vr", "V", 3.5, "reference_voltage", 3.5),
    ("Sm", "S", 10.0, "wind_speed", 4.4704),
    ("Sm", "N", 10.0, "wind_speed", 5.144444),
    ("Ta", "F", 212.0, "temperature", 100.0),
    ("Pa", "P", 101325.0, "pressure", 101325.0),
    ("Pa", "B", 1.01325, "pressure", 101325.0),
    ("Pa", "M", 760.0, "pressure", 101325.0),
    ("Pa", "I", 29.92, "pressure", 101320.76),
    ("Rc", "I", 1.0, "rain_total", 25.4),
    ("Ri", "I", 1.0, "rain_intensity", 25.4),
    ("Hc", "I", 6.4516, "hail_total", 1.0),
]


@pytest.mark.parametrize(("field", "unit", "value", "metric", "expected"), UNITS)
def test_unit_characters(field: str, unit: str, value: float, metric: str, expected: float) -> None:
    message = wxt.decode_line(f"0R0,{field}={value}{unit}".encode(), "p", 0.0)
    assert [(r.metric, pytest.approx(r.value, rel=1e-3)) for r in message.readings] == [
        (metric, expected)
    ]


def test_invalid_marker_is_a_missing_value() -> None:
    message = wxt.decode_line(b"0R0,Dm=#D,Sm=0.0#,Ta=12.0C,Ua=#", "p", 0.0)
    assert [r.metric for r in message.readings] == ["temperature"]
    assert message.invalid == 2  # Sm=0.0# and Ua=# (no number at all, marker as unit)
    assert [p.cause for p in message.problems] == ["bad_number"]  # Dm=#D: '#' as the number


def test_hail_in_plain_hits_cannot_become_per_area() -> None:
    message = wxt.decode_line(b"0R3,Hc=3.0H", "p", 0.0)
    assert message.readings == []
    assert [p.cause for p in message.problems] == ["unknown_unit"]


@pytest.mark.parametrize("line", [b"", b"0XU,M=P", b"hello", b"\xff\xfe", b"0R9,Ta=1C"])
def test_not_a_data_message(line: bytes) -> None:
    with pytest.raises(SerialDecodeError):
        wxt.decode_line(line, "p", 0.0)


def test_line_splitter() -> None:
    splitter = wxt.LineSplitter(max_length=40)
    assert splitter.feed(b"0R0,Ta=1") == []
    assert splitter.feed(b".0C\r\n0R0,") == [b"0R0,Ta=1.0C"]
    out = splitter.feed(b"x" * 50)
    assert [e.cause for e in out] == ["line_too_long"]  # type: ignore[union-attr]
    assert splitter.feed(b"tail of the runaway\r\n0R0,Ua=5P\r\n") == [b"0R0,Ua=5P"]


def test_poll_command() -> None:
    assert wxt.poll_command("0") == b"0R0\r\n"
    assert wxt.poll_command("3", use_crc=True) == b"3r0" + wxt.crc(b"3r0").encode() + b"\r\n"


@given(st.binary(max_size=200))
def test_decode_line_arbitrary_bytes(data: bytes) -> None:
    try:
        message = wxt.decode_line(data, "p", 0.0)
    except SerialDecodeError:
        return
    assert all(r.metric in CATALOG for r in message.readings)


_field = st.tuples(
    st.sampled_from(sorted(wxt.FIELDS) + ["Id", "Zz"]),
    st.text("0123456789.-#e", max_size=6),
    st.sampled_from(list("MKSNDCFPHBIsV#x") + [""]),
)


@given(st.lists(_field, max_size=12))
def test_decode_line_arbitrary_fields(fields: list[tuple[str, str, str]]) -> None:
    line = "0R0," + ",".join(f"{n}={v}{u}" for n, v, u in fields)
    message = wxt.decode_line(line.encode(), "p", 0.0)
    assert len(message.readings) + message.invalid + len(message.problems) <= len(fields)


@given(st.lists(st.binary(max_size=30), max_size=10))
def test_line_splitter_arbitrary_chunks(chunks: list[bytes]) -> None:
    splitter = wxt.LineSplitter(max_length=64)
    for chunk in chunks:
        for item in splitter.feed(chunk):
            assert isinstance(item, bytes | SerialDecodeError)
