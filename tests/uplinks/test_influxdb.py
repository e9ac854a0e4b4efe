"""InfluxDB uplink: line protocol, a real VictoriaMetrics as receiver, and the status codes a
real server cannot be made to answer (429, 503, 413, 400, garbage) from a scripted loopback
HTTP server."""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.parse
from pathlib import Path

import pytest

from gateway.batch import (
    SCHEMA_NAME,
    BatchDocument,
    CarryEndRecord,
    EventRecord,
    KeyframeRecord,
    WindowRecord,
    decode_document,
)
from gateway.errors import BatchRejected, UplinkUnavailable
from gateway.uplinks.influxdb import Config, load_uplink
from gateway.uplinks.influxdb.lines import document_lines, window_point
from gateway.uplinks.influxdb.writer import parse_retry_after
from tests.support.ports import free_port
from tests.support.wait import async_wait_for
from tests.uplinks.conftest import (
    ScriptedAnswer,
    ScriptedHttpServer,
    VictoriaMetrics,
    make_batch,
    uplink_context,
)

InfluxUplink = load_uplink()


# ------------------------------------------------------------------ line protocol (pure)

def test_window_lines_per_kind() -> None:
    # Escaping per the InfluxDB line protocol reference (docs.influxdata.com, "Line protocol",
    # Special characters): commas, spaces and equals signs in tag values take a backslash.
    gauge = WindowRecord(device="serial:/dev/tty USB0/1", metric="temperature", unit="Cel",
                         kind="gauge", start=1_795_000_020, window=60, count=3, min=1.0, max=3.5,
                         mean=2.0, last=3.5)
    assert window_point("gw,1", gauge).to_line_protocol() == (
        "temperature,device=serial:/dev/tty\\ USB0/1,gateway=gw\\,1 "
        "count=3i,last=3.5,max=3.5,mean=2,min=1,revision=0i,window=60i 1795000020000"
    )
    state = WindowRecord(device="ocpp:CP-1/1", metric="connector_status", unit="/", kind="state",
                         start=60, window=60, count=2, revision=1, last="Charging", transitions=1,
                         durations={"Available": 12.5, "Charging": 47.5})
    assert window_point("gw", state, prefix="edge_", tags={"site": "harbour"}).to_line_protocol() == (
        "edge_connector_status,device=ocpp:CP-1/1,gateway=gw,site=harbour "
        'count=2i,dur_Available=12.5,dur_Charging=47.5,last="Charging",revision=1i,'
        "transitions=1i,window=60i 60000"
    )
    counter = WindowRecord(device="ocpp:CP-1/1", metric="energy_active_import_register", unit="Wh",
                           kind="counter", start=120, window=60, count=4, first=10.0, last=30.25,
                           delta=20.25, resets=0)
    assert window_point("gw", counter).to_line_protocol() == (
        "energy_active_import_register,device=ocpp:CP-1/1,gateway=gw "
        "count=4i,delta=20.25,first=10,last=30.25,resets=0i,revision=0i,window=60i 120000"
    )


def test_event_lines() -> None:
    document = BatchDocument(schema=SCHEMA_NAME, version=1, gateway="gw", stream="s", seq=1,
                             batch_id="b", created=0.0, events=[
                                 EventRecord(device="ocpp:CP-1/1", ts=1.2346, name="connector_status",
                                             severity="alarm", value="Faulted",
                                             detail={"error_code": "GroundFailure"}),
                                 EventRecord(device="lora:01", ts=2.0, name="sensor_alarm",
                                             severity="warning"),
                             ])
    assert document_lines(document) == [
        b'event,device=ocpp:CP-1/1,gateway=gw,name=connector_status,severity=alarm '
        b'detail_error_code="GroundFailure",text="Faulted" 1235',
        b"event,device=lora:01,gateway=gw,name=sensor_alarm,severity=warning value=1 2000",
    ]


def test_keyframe_and_end_of_carry_lines() -> None:
    """States are written on change; keyframes and ends of carry are the only points between."""
    document = BatchDocument(
        schema=SCHEMA_NAME, version=2, gateway="gw", stream="s", seq=1, batch_id="b", created=0.0,
        keyframe=[KeyframeRecord(device="ocpp:CP-1/1", metric="connector_status", unit="/",
                                 since=100.5, state="Charging")],
        ended=[CarryEndRecord(device="ocpp:CP-2/1", metric="connector_status", unit="/", since=7.0,
                              state="Available", start=86460)],
    )
    assert document_lines(document) == [
        b'connector_status,device=ocpp:CP-1/1,gateway=gw state="Charging" 100500',
        b"connector_status,device=ocpp:CP-2/1,gateway=gw carry_ended=1i 86460000",
    ]


def test_retry_after_forms() -> None:
    now = 1_000_000.0
    assert parse_retry_after("7", now) == 7.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# ------------------------------------------------------------------ VictoriaMetrics

def _exported(victoria: VictoriaMetrics, gateway: str) -> dict[tuple[str, str, int], float]:
    values: dict[tuple[str, str, int], float] = {}
    for series in victoria.export(f'{{gateway="{gateway}"}}'):
        for value, ts in zip(series["values"], series["timestamps"], strict=True):
            values[(series["metric"]["__name__"], series["metric"]["device"], ts)] = value
    return values


async def test_points_read_back_equal_what_was_sent(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    gateway = f"gw-vm-{time.monotonic_ns()}"
    ctx = uplink_context(tmp_path, "influxdb")
    uplink = InfluxUplink(Config(url=victoria.url, bucket="edge", token="ignored-by-vm"), ctx)
    batches = [make_batch(seq, gateway=gateway) for seq in range(1, 6)]
    await uplink.start()
    await asyncio.gather(*(uplink.send(b) for b in batches))
    await uplink.stop()
    # Expected: VictoriaMetrics names each field <measurement>_<field>; string fields are not
    # stored as numbers, so `last` of state windows is left out of the comparison.
    expected: dict[tuple[str, str, int], float] = {}
    for batch in batches:
        for record in decode_document(batch.payload).windows:
            fields: dict[str, float] = {"count": record.count, "window": record.window,
                                        "revision": record.revision}
            for name in ("min", "max", "mean", "first", "delta", "resets", "transitions"):
                if getattr(record, name) is not None:
                    fields[name] = getattr(record, name)
            if isinstance(record.last, float):
                fields["last"] = record.last
            for state, seconds in (record.durations or {}).items():
                fields[f"dur_{state}"] = seconds
            for name, value in fields.items():
                expected[(f"{record.metric}_{name}", record.device, record.start * 1000)] = value
    got = await async_wait_for(
        lambda: (lambda v: v if len(v) >= len(expected) else None)(_exported(victoria, gateway)),
        timeout=20, interval=0.25, what="points readable in VictoriaMetrics",
    )
    assert {k: got[k] for k in expected} == expected
    assert ctx.counters["points_written"] == 5 * 9


# ------------------------------------------------------------------ status codes

async def test_gzip_and_auth_headers(scripted_http: ScriptedHttpServer, tmp_path: Path) -> None:
    uplink = InfluxUplink(Config(url=scripted_http.url, org="city", bucket="climate", token="t0k"),
                          uplink_context(tmp_path, "influxdb"))
    batch = make_batch(1, devices=1)
    await uplink.send(batch)
    path, headers, body = scripted_http.requests[0]
    parsed = urllib.parse.urlsplit(path)
    assert parsed.path == "/api/v2/write"
    assert urllib.parse.parse_qs(parsed.query) == {"org": ["city"], "bucket": ["climate"],
                                                   "precision": ["ms"]}
    assert headers["Content-Encoding"] == "gzip" and headers["Authorization"] == "Token t0k"
    assert body == b"\n".join(document_lines(batch.document()))


@pytest.mark.parametrize(("status", "header", "expected"), [
    (429, "12", 12.0), (503, "3", 3.0), (503, None, None),
])
async def test_busy_server_retry_after(scripted_http: ScriptedHttpServer, tmp_path: Path,
                                       status: int, header: str | None, expected: float | None) -> None:
    scripted_http.script = [ScriptedAnswer(status, b"slow down",
                                           {"Retry-After": header} if header else {})]
    ctx = uplink_context(tmp_path, "influxdb")
    uplink = InfluxUplink(Config(url=scripted_http.url), ctx)
    with pytest.raises(UplinkUnavailable) as busy:
        await uplink.send(make_batch(1))
    assert busy.value.retry_after == expected
    assert ctx.counters == {f"write_failed_busy_{status}": 1}


async def test_too_large_is_split_in_halves(scripted_http: ScriptedHttpServer, tmp_path: Path) -> None:
    scripted_http.script = [ScriptedAnswer(204, max_lines=2)]
    ctx = uplink_context(tmp_path, "influxdb")
    uplink = InfluxUplink(Config(url=scripted_http.url), ctx)
    batch = make_batch(1, devices=3)  # 9 lines
    await uplink.send(batch)
    delivered = [body for _, _, body in scripted_http.requests if len(body.splitlines()) <= 2]
    assert sorted(line for body in delivered for line in body.splitlines()) == sorted(
        document_lines(batch.document()))
    # 9 -> 4 + 5 -> 2 + 2 + 2 + 3 -> 3 splits into 1 + 2: requests 1 + 2 + 4 + 2 = 9, 5 of them ok
    assert len(scripted_http.requests) == 9 and len(delivered) == 5
    assert ctx.counters["split_413"] == 4 and ctx.counters["points_written"] == 9


async def test_single_line_too_large_is_rejected(scripted_http: ScriptedHttpServer,
                                                 tmp_path: Path) -> None:
    scripted_http.script = [ScriptedAnswer(413, b"request entity too large")]
    uplink = InfluxUplink(Config(url=scripted_http.url), uplink_context(tmp_path, "influxdb"))
    with pytest.raises(BatchRejected, match="single line is too large"):
        await uplink.send(make_batch(1, events=True))


async def test_malformed_is_rejected_and_what_follows_goes_on(
    scripted_http: ScriptedHttpServer, tmp_path: Path
) -> None:
    body = b'{"code":"invalid","message":"unable to parse line 1"}'
    scripted_http.script = [ScriptedAnswer(400, body), ScriptedAnswer(204)]
    ctx = uplink_context(tmp_path, "influxdb")
    uplink = InfluxUplink(Config(url=scripted_http.url), ctx)
    with pytest.raises(BatchRejected) as rejected:
        await uplink.send(make_batch(1))
    assert rejected.value.status == 400 and "unable to parse line 1" in rejected.value.reason
    await uplink.send(make_batch(2))
    assert ctx.counters["rejected_400"] == 1 and ctx.counters["points_written"] == 9


@pytest.mark.parametrize(("status", "cause"), [(401, "unauthorized"), (404, "not_found"),
                                               (408, "request_timeout"), (500, "http_500")])
async def test_link_faults_keep_the_batch(scripted_http: ScriptedHttpServer, tmp_path: Path,
                                          status: int, cause: str) -> None:
    scripted_http.script = [ScriptedAnswer(status, b"nope")]
    ctx = uplink_context(tmp_path, "influxdb")
    uplink = InfluxUplink(Config(url=scripted_http.url), ctx)
    with pytest.raises(UplinkUnavailable, match=f"HTTP {status}"):
        await uplink.send(make_batch(1))
    assert ctx.counters == {f"write_failed_{cause}": 1}


async def test_garbage_answer_and_refused_connection(scripted_http: ScriptedHttpServer,
                                                     tmp_path: Path) -> None:
    scripted_http.raw_reply = b"\x00\x17garbage, not HTTP\r\n\r\n"
    ctx = uplink_context(tmp_path, "influxdb")
    uplink = InfluxUplink(Config(url=scripted_http.url), ctx)
    with pytest.raises(UplinkUnavailable, match="no valid HTTP answer"):
        await uplink.send(make_batch(1))
    assert ctx.counters == {"write_failed_bad_answer": 1}

    ctx2 = uplink_context(tmp_path, "influxdb")
    refused = InfluxUplink(Config(url=f"http://127.0.0.1:{free_port()}", timeout=3), ctx2)
    with pytest.raises(UplinkUnavailable, match="cannot connect"):
        await refused.send(make_batch(1))
    assert ctx2.counters == {"write_failed_connection_refused": 1}


def test_config_validation() -> None:
    problems = Config(tags={"gateway": "x"}, ca_file="/ca.pem").validate()
    assert problems == [
        "tags: expected no tag the uplink writes itself, found ['gateway']",
        "ca_file: expected an https:// url with it, found 'http://localhost:8086'",
    ]

