"""The batch schema and the platform receiver: validation, duplicates, revisions, gaps, and the
`edge-gateway-sim platform` command against a real Mosquitto (shared subscription included)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jsonschema
import msgspec
import paho.mqtt.client as mqtt
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from gateway.batch import (
    ROW_FIELDS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    BatchDocument,
    EventRecord,
    KeyframeRecord,
    WindowRecord,
    decode_document,
    encode_document,
)
from simulators.platform import Ledger, PlatformReceiver
from simulators.platform.ledger import load_schema
from tests.support.mosquitto import Broker
from tests.support.wait import async_wait_for, wait_for
from tests.uplinks.conftest import GATEWAY, make_batch

VALIDATOR = jsonschema.Draft202012Validator(load_schema(2))


# ------------------------------------------------------------------ schema == gateway/batch.py

def test_schema_names_exactly_what_the_encoder_writes() -> None:
    schema = load_schema(2)
    assert set(schema["properties"]) == {
        "schema", "version", "gateway", "stream", "seq", "batch_id", "created", "closed", "window",
        "series", "windows", "keyframe", "ended", "events"}
    assert set(schema["required"]) == {"schema", "version", "gateway", "stream", "seq", "batch_id", "created"}
    event = schema["$defs"]["event"]
    fields = msgspec.structs.fields(EventRecord)
    assert set(event["properties"]) == {f.name for f in fields}
    assert set(event["required"]) == {f.name for f in fields if f.required}
    rows = schema["properties"]["windows"]
    longest = 4 + max(len(names) for names in ROW_FIELDS.values())
    assert (rows["items"]["minItems"], rows["items"]["maxItems"]) == (5, longest)
    for kind, names in ROW_FIELDS.items():
        assert f"{kind}: [{', '.join(names)}" in rows["description"]
    assert schema["properties"]["schema"]["const"] == SCHEMA_NAME
    assert schema["properties"]["version"]["const"] == SCHEMA_VERSION == 2


_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
# values as devices send them (at most 9 significant digits): they survive the wire exactly
_value = st.integers(-10**8, 10**8).map(lambda v: v / 100)
_text = st.text(min_size=1, max_size=12)
_state = st.sampled_from(["Available", "Charging", "Faulted"])


@st.composite
def _window_record(draw: st.DrawFn, window: int) -> WindowRecord:
    kind = draw(st.sampled_from(["gauge", "counter", "state"]))
    common = {"device": draw(_text), "metric": draw(st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z")),
              "unit": draw(st.text(max_size=5)), "kind": kind, "start": draw(st.integers(0, 2**40)) * window,
              "window": window, "count": draw(st.integers(0 if kind == "state" else 1, 10**6)),
              "revision": draw(st.integers(0, 50))}
    if kind == "gauge":
        low, high, last = sorted(draw(st.lists(_value, min_size=3, max_size=3)))[::1]
        if common["count"] == 1:
            low = high = last
        return WindowRecord(**common, min=low, max=high, mean=last, last=last)
    if kind == "counter":
        return WindowRecord(**common, first=draw(_value), last=draw(_value),
                            delta=abs(draw(_value)), resets=draw(st.integers(0, 100)))
    return WindowRecord(**common, last=draw(_state), transitions=draw(st.integers(0, 100)),
                        durations=draw(st.dictionaries(_state, st.integers(0, window).map(float), max_size=3)))


@st.composite
def _documents(draw: st.DrawFn) -> BatchDocument:
    window = draw(st.sampled_from([1, 60, 300]))
    return BatchDocument(
        schema=SCHEMA_NAME, version=SCHEMA_VERSION,
        gateway=draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")), stream=draw(_text),
        seq=draw(st.integers(1, 2**53)), batch_id=draw(_text), created=draw(_finite),
        windows=draw(st.lists(_window_record(window), max_size=4)),
        events=draw(st.lists(st.builds(
            EventRecord, device=_text, ts=_finite, name=_text,
            severity=st.sampled_from(["info", "warning", "alarm"]), metric=st.none() | _text,
            value=st.none() | _value | _text,
            detail=st.none() | st.dictionaries(_text, st.text(max_size=8), max_size=3),
        ), max_size=2)),
        keyframe=draw(st.lists(st.builds(KeyframeRecord, device=_text, metric=st.just("connector_status"),
                                         unit=st.just("/"), since=_value, state=_state), max_size=3)),
        closed=draw(st.integers(0, 2**40)),
    )


@given(_documents())
def test_every_encoded_document_validates_and_decodes_to_itself(document: BatchDocument) -> None:
    payload = encode_document(document)
    assert payload[:2] == b"\x1f\x8b"
    VALIDATOR.validate(json.loads(gzip.decompress(payload)))
    again = decode_document(payload)
    assert again.windows == document.windows
    assert (again.events, again.closed) == (document.events, document.closed)
    # a series named twice (windows and keyframe) is one entry of the series table
    assert [(k.device, k.state) for k in again.keyframe] == [(k.device, k.state) for k in document.keyframe]


def test_schema_rejects_what_the_gateway_never_writes() -> None:
    good = json.loads(make_batch(1).json())
    assert VALIDATOR.is_valid(good)
    row = good["windows"][0]
    for change in (
        {"version": 1}, {"seq": 0}, {"gateway": "has space"}, {"extra": 1},
        {"series": [[*good["series"][0][:3], "histogram"]]},
        {"windows": [[row[0], row[1], -1, *row[3:]]]},
        {"windows": [row[:4]]},
        {"events": [{"device": "d", "ts": 1.0, "name": "x", "severity": "panic"}]},
    ):
        assert not VALIDATOR.is_valid({**good, **change}), change
    del good["batch_id"]
    assert not VALIDATOR.is_valid(good)


def test_the_ledger_still_reads_version_1_documents() -> None:
    v1 = msgspec.json.encode(BatchDocument(
        schema=SCHEMA_NAME, version=1, gateway=GATEWAY, stream="old", seq=1, batch_id="v1-1",
        created=0.0, windows=[_window("a", 0, 4)]))
    ledger = Ledger()
    assert ledger.ingest(v1), ledger.invalid_samples
    assert ledger.report()["readings_covered"] == 4 and decode_document(v1).windows == [_window("a", 0, 4)]


# ------------------------------------------------------------------ the ledger (sans I/O)

def _window(device: str, start: int, count: int, revision: int = 0) -> WindowRecord:
    return WindowRecord(device=device, metric="temperature", unit="Cel", kind="gauge", start=start,
                        window=60, count=count, revision=revision, min=1.0, max=2.0, mean=1.5,
                        last=2.0)


def _payload(seq: int, windows: list[WindowRecord], *, stream: str = "s1",
             batch_id: str | None = None) -> bytes:
    return encode_document(BatchDocument(
        schema=SCHEMA_NAME, version=SCHEMA_VERSION, gateway=GATEWAY, stream=stream, seq=seq,
        batch_id=batch_id or uuid.uuid4().hex, created=0.0, windows=windows), compress=False)


def test_ledger_duplicates_revisions_gaps_and_invalid() -> None:
    ledger = Ledger()
    first = _payload(1, [_window("a", 0, 5), _window("b", 0, 7)], batch_id="B1")
    assert ledger.ingest(first)
    assert ledger.ingest(first)  # re-sent after a lost PUBACK: same batch id
    ledger.ingest(gzip.compress(_payload(2, [_window("a", 60, 3)])), "application/json+gzip")
    ledger.ingest(_payload(3, [_window("a", 0, 6, revision=1)]))  # late reading: revision 1
    ledger.ingest(_payload(4, [_window("a", 0, 5, revision=0)]))  # an old revision again
    ledger.ingest(_payload(7, [_window("c", 0, 1)]))  # 5 and 6 never arrived
    ledger.ingest(_payload(2, [_window("z", 0, 1)], stream="s2"))  # new database: own stream
    assert not ledger.ingest(b"{not json")
    assert not ledger.ingest(json.dumps({"schema": SCHEMA_NAME, "version": 1}).encode())
    assert not ledger.ingest(b"\x1f\x8b\x08 broken gzip")
    report = ledger.report()
    assert report["batches"] == 6 and report["messages"] == 10
    assert report["duplicates"] == {"batches": 1, "windows": 1, "events": 0,
                                    "superseded_revisions": 1}
    # a@0 counts its latest revision (6), not 5 + 6
    assert report["readings_covered"] == 6 + 7 + 3 + 1 + 1
    assert report["window_records"] == 5
    assert report["gaps"] == {f"{GATEWAY}/s1": [5, 6], f"{GATEWAY}/s2": [1]}
    assert report["invalid"]["count"] == 3
    assert report["invalid"]["samples"][1] == "schema: (document): 'gateway' is a required property"


# ------------------------------------------------------------------ over a real broker

def _publish(broker: Broker, topic: str, payloads: list[bytes]) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for payload in payloads:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


async def test_shared_subscription_splits_the_load(mosquitto: Broker) -> None:
    receivers = [PlatformReceiver(mosquitto.host, mosquitto.port, share_group="platform")
                 for _ in range(2)]
    for receiver in receivers:
        await receiver.start()
    payloads = [make_batch(seq).payload for seq in range(1, 41)]
    _publish(mosquitto, f"edge/{GATEWAY}/batch", payloads)
    await async_wait_for(lambda: sum(r.report()["batches"] for r in receivers) == 40,
                         what="40 batches across the group")
    shares = [r.report()["batches"] for r in receivers]
    for receiver in receivers:
        await receiver.stop()
    # a lower bound: how the broker splits a share group is its own choice (MQTT 5 leaves it
    # open; Mosquitto skips a member whose in-flight window is full), so only that each got a
    # part and none got all is the contract
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == 40


def test_platform_command_writes_a_report(mosquitto: Broker, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "platform", "--host", mosquitto.host,
         "--port", str(mosquitto.port), "--prefix", "city", "--duration", "30",
         "--report", str(report_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        # Subscribed once the broker logs the subscription; then publish and stop it.
        wait_for(lambda: "city/+/batch" in mosquitto.log_path.read_text(errors="replace"),
                 timeout=15, what="platform subscribed")
        payloads = [make_batch(seq).payload for seq in (1, 2, 4)] + [b"garbage"]
        _publish(mosquitto, f"city/{GATEWAY}/batch", payloads)
        # paho acknowledges a QoS 1 message after on_message returned: 4 PUBACKs from the
        # receiver mean 4 payloads accounted.
        wait_for(lambda: mosquitto.log_path.read_text(errors="replace").count("Received PUBACK from")
                 >= 4, what="receiver acknowledged 4 messages")
        started = time.monotonic()
        process.send_signal(2)  # SIGINT: stop early, write the report
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0 and time.monotonic() - started < 15
    report = json.loads(report_path.read_text())
    assert report["gaps"] == {f"{GATEWAY}/s-test": [3]}
    assert report["invalid"]["count"] == 1 and report["batches"] == 3
    assert b"3 batches" in stderr


def test_one_series_per_device_metric_unit_and_kind() -> None:
    """A device and metric under two kinds (a metric redefined between versions, or a
    forwarded x_ metric configured later) are two series: each row decodes with its own kind."""
    gauge = WindowRecord(device="d", metric="x_level", unit="", kind="gauge", start=60, window=60, count=2,
                         min=1.0, max=2.0, mean=1.5, last=2.0)
    counter = WindowRecord(device="d", metric="x_level", unit="", kind="counter", start=120, window=60, count=1,
                           first=3.0, last=3.0, delta=1.0, resets=0)
    document = BatchDocument(schema=SCHEMA_NAME, version=SCHEMA_VERSION, gateway=GATEWAY, stream="s", seq=1,
                             batch_id="b", created=0.0, windows=[gauge, counter])
    payload = encode_document(document)
    assert len(json.loads(gzip.decompress(payload))["series"]) == 2
    assert decode_document(payload).windows == [gauge, counter]
