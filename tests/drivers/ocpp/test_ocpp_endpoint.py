"""Endpoint mode end to end: simulated charge points -> driver -> windows -> outbox."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.v16 import call as call16
from websockets.exceptions import InvalidStatus

from gateway.batch import WindowRecord
from gateway.model import CATALOG, Kind, Severity
from gateway.outbox import Commit, Outbox
from gateway.windows import Aggregator
from simulators.ocpp import Fleet, FleetConfig
from tests.drivers.ocpp.support import as_tuples, running_driver
from tests.support.mosquitto import make_tls
from tests.support.wait import async_wait_for

WINDOW = 60


def reference_windows(expected: list[Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """What the windows must report, computed straight from what the simulator sent."""
    series: dict[tuple[str, str], list[tuple[float, Any]]] = defaultdict(list)
    starts: set[int] = set()
    for e in expected:
        series[(e.device, e.metric)].append((e.ts, e.value))
        starts.add(int(e.ts // WINDOW) * WINDOW)
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for (device, metric), points in series.items():
        points.sort(key=lambda p: p[0])
        kind = CATALOG[metric].kind
        by_window: dict[int, list[tuple[float, Any]]] = defaultdict(list)
        for ts, value in points:
            by_window[int(ts // WINDOW) * WINDOW].append((ts, value))
        if kind is Kind.GAUGE:
            for start, pts in by_window.items():
                values = [v for _, v in pts]
                out[(device, metric, start)] = {"count": len(values), "min": min(values), "max": max(values),
                                                "mean": sum(values) / len(values), "last": values[-1]}
        elif kind is Kind.COUNTER:
            # the register only rises here; a window's delta starts from the previous reading
            previous = None
            for start in sorted(by_window):
                values = [v for _, v in by_window[start]]
                base = previous if previous is not None else values[0]
                out[(device, metric, start)] = {"first": values[0], "last": values[-1],
                                                "delta": values[-1] - base, "count": len(values)}
                previous = values[-1]
        else:
            # state: time in each state inside every window with a report (states on change:
            # the platform carries the state through the windows between)
            reported = {int(ts // WINDOW) * WINDOW for ts, _ in points}
            for start in sorted(s for s in starts if s in reported):
                end = start + WINDOW
                durations: dict[str, float] = defaultdict(float)
                state, cursor = None, float(start)
                for ts, value in points:
                    if ts >= end:
                        break
                    if ts > cursor:
                        if state is not None:
                            durations[state] += ts - cursor
                        cursor = ts
                    state = value
                durations[state] += end - cursor
                out[(device, metric, start)] = {"durations": {k: v for k, v in durations.items() if v > 0 or k == state},
                                                "last": state}
    return out


def outbox_records(tmp_path: Path, readings: list[Any], events: list[Any]) -> tuple[list[WindowRecord], list[Any]]:
    aggregator = Aggregator(window=WINDOW, grace=10.0, max_lateness=3600.0)
    for reading in readings:
        aggregator.add(reading)
    outbox = Outbox(tmp_path / "outbox.db", gateway_id="gw-test", uplinks=["file"], window=WINDOW,
                    max_lateness=3600.0, max_bytes=64 * 1024 * 1024, batch_max_records=100_000)
    outbox.open()
    try:
        outbox.commit(Commit(now=time.time(), close=aggregator.flush_all(), events=list(events)))
        batches = outbox.pending("file", set(), 10_000)
        documents = [b.document() for b in batches]
    finally:
        outbox.close()
    return [w for d in documents for w in d.windows], [e for d in documents for e in d.events]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_end_to_end_readings_windows_and_outbox(tmp_path: Path, version: str) -> None:
    async with running_driver(tmp_path) as gw:
        fleet = Fleet(FleetConfig(url=gw.url, version=version, charge_points=3, connectors=2,
                                  seed=7, fault_probability=0.08, plug_probability=0.4))
        await fleet.start()
        await fleet.step(40)
        await fleet.stop()
        expected = fleet.expected
        await async_wait_for(lambda: len(gw.readings) == len(expected), timeout=10, what="all readings")
    # every reading exactly, in catalog units, at the charge point's own timestamps
    assert as_tuples(gw.readings) == sorted((e.device, e.metric, e.value, e.ts) for e in expected)
    assert gw.ctx.decode_errors == {}
    metrics = {r.metric for r in gw.readings}
    assert metrics == {"connector_status", "energy_active_import_register", "power_active_import",
                       "current_import", "voltage", "state_of_charge"} | (
        {"temperature"} if version == "1.6" else set())  # 2.0.1 has no Temperature measurand
    # a change to Faulted is an alarm event, once per change
    faults = [e for e in expected if e.metric == "connector_status" and e.value == "Faulted"]
    assert len(faults) == {"1.6": 2, "2.0.1": 3}[version], "seed 7 and 40 steps make these faults"
    assert sorted((e.device, e.ts) for e in gw.events) == sorted((e.device, e.ts) for e in faults)
    assert {e.severity for e in gw.events} == {Severity.ALARM}

    windows, events = outbox_records(tmp_path, gw.readings, gw.events)
    assert len(events) == len(faults)
    reference = reference_windows(expected)
    got = {(w.device, w.metric, w.start): w for w in windows}
    assert set(got) == set(reference)
    for key, want in reference.items():
        record = got[key]
        for name, value in want.items():
            actual = getattr(record, name)
            if isinstance(value, dict):
                assert actual == pytest.approx(value), (key, name)
            elif isinstance(value, float):
                assert actual == pytest.approx(value), (key, name)
            else:
                assert actual == value, (key, name)
    charging = "Charging" if version == "1.6" else "Occupied"
    assert any(charging in (w.durations or {}) for w in windows)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_polling_triggers_quiet_charge_points_one_call_at_a_time(tmp_path: Path, version: str) -> None:
    async with running_driver(tmp_path, poll_interval=1.0, call_timeout=5.0) as gw:
        fleet = Fleet(FleetConfig(url=gw.url, version=version, charge_points=2, connectors=2, report=False))
        await fleet.start()
        await async_wait_for(
            lambda: {r.device for r in gw.readings if r.metric == "connector_status"}
            == {f"ocpp:SIM000{i}/{c}" for i in range(2) for c in (1, 2)}
            and {r.device for r in gw.readings if r.metric == "energy_active_import_register"}
            == {f"ocpp:SIM000{i}/{c}" for i in range(2) for c in (1, 2)},
            timeout=15, what="triggered status and meter values",
        )

        def settled() -> tuple[int, list[int]] | None:
            """(triggers answered, triggers each charge point received) when none is in flight."""
            sent = gw.ctx.counters.get("triggers_sent", 0)
            received = [cp.triggers for cp in fleet.charge_points]
            return (sent, received) if sent == sum(received) else None

        # every TriggerMessage a charge point received is counted once it is answered
        sent, received = await async_wait_for(settled, timeout=10, what="no trigger in flight")
        await fleet.stop()
    # a lower bound: the poll asks each second for as long as the test runs; each charge point
    # was asked at least for its status and its meter values
    assert sent == sum(received) and min(received) >= 2
    for cp in fleet.charge_points:
        outstanding = 0  # TriggerMessage CALLs from the gateway not yet answered
        for direction, frame in cp.log:
            message = json.loads(frame)
            if direction == "in" and message[0] == 2:
                outstanding += 1
                assert outstanding == 1, "a second CALL arrived before the first was answered"
            elif direction == "out" and message[0] in (3, 4):
                outstanding -= 1


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_security_profiles_and_unknown_ids(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    settings = {"passwords": {"SIM0000": "correct-horse-1"}, "allowed_ids": ["OPEN-[0-9]+"],
                "tls_cert": str(tls.server_cert), "tls_key": str(tls.server_key)}
    import ssl

    client_tls = ssl.create_default_context(cafile=str(tls.ca))
    async with running_driver(tmp_path, **settings) as gw:
        base = f"wss://localhost:{gw.driver.port}/"
        # profile 2: right password over TLS
        async with websockets.connect(base + "SIM0000", subprotocols=["ocpp1.6"], ssl=client_tls,
                                      additional_headers=_basic("SIM0000", "correct-horse-1")) as ok:
            assert ok.subprotocol == "ocpp1.6"
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(base + "SIM0000", subprotocols=["ocpp1.6"], ssl=client_tls,
                                     additional_headers=_basic("SIM0000", "wrong-password"))
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(base + "SIM0000", subprotocols=["ocpp1.6"], ssl=client_tls)
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(base + "SIM9999", subprotocols=["ocpp1.6"], ssl=client_tls)
        assert refused.value.response.status_code == 404
        # an id matching allowed_ids needs no password
        async with websockets.connect(base + "OPEN-7", subprotocols=["ocpp2.0.1", "ocpp1.6"], ssl=client_tls) as ok:
            assert ok.subprotocol == "ocpp2.0.1"
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(base + "OPEN-8", subprotocols=["ocpp1.5"], ssl=client_tls)
        assert refused.value.response.status_code == 400
    assert gw.ctx.counters["refused_bad_password"] == 2
    assert gw.ctx.counters["refused_unknown_id"] == 1


async def _exchange(connection: Any, frame: str) -> list[Any]:
    await connection.send(frame)
    return json.loads(await asyncio.wait_for(connection.recv(), 5))


@pytest.mark.parametrize(
    ("protocol", "format_code", "rpc_code"),
    [("ocpp1.6", "FormationViolation", "FormationViolation"), ("ocpp2.0.1", "FormatViolation", "RpcFrameworkError")],
)
async def test_malformed_frames_get_callerror_and_connection_stays(
    tmp_path: Path, protocol: str, format_code: str, rpc_code: str
) -> None:
    async with running_driver(tmp_path) as gw:
        async with websockets.connect(gw.url + "SIM0001", subprotocols=[protocol]) as cp, \
                websockets.connect(gw.url + "SIM0002", subprotocols=[protocol]) as other:
            answer = await _exchange(cp, "[2, \"abc\", \"Heartbeat\", {")  # cut short: not JSON
            assert answer[:3] == [4, "-1", rpc_code]
            answer = await _exchange(cp, '[2, "m1", "Heartbeat"]')  # a CALL without payload
            assert answer[:3] == [4, "m1", format_code if protocol == "ocpp1.6" else "FormatViolation"]
            # schema violation: a status outside the enumeration
            if protocol == "ocpp1.6":
                bad = {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}
            else:
                bad = {"timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Sleeping", "evseId": 1, "connectorId": 1}
            answer = await _exchange(cp, json.dumps([2, "m2", "StatusNotification", bad]))
            assert answer[:3] == [4, "m2", format_code]
            # a missing required field
            answer = await _exchange(cp, json.dumps([2, "m3", "StatusNotification", {"connectorId": 1}]))
            assert answer[:3] == [4, "m3", "ProtocolError" if protocol == "ocpp1.6" else "ProtocolError"]
            answer = await _exchange(cp, json.dumps([2, "m4", "FlyToTheMoon", {}]))
            assert answer[:3] == [4, "m4", "NotImplemented"]
            # still up, and the neighbour never noticed
            assert (await _exchange(cp, '[2, "m5", "Heartbeat", {}]'))[:2] == [3, "m5"]
            assert (await _exchange(other, '[2, "n1", "Heartbeat", {}]'))[:2] == [3, "n1"]
    assert gw.readings == []  # the invalid StatusNotification produced nothing
    assert gw.ctx.counters["callerrors_sent"] == 5
    assert gw.ctx.decode_errors["not_json"] == 1


async def test_hundred_charge_points_at_once(tmp_path: Path) -> None:
    async with running_driver(tmp_path) as gw:
        fleet = Fleet(FleetConfig(url=gw.url, version="2.0.1", charge_points=100, connectors=1))
        began = time.perf_counter()
        await fleet.start()  # 100 handshakes, BootNotifications and StatusNotifications at once
        await async_wait_for(lambda: len(gw.driver.connected) == 100, timeout=10, what="100 connected")
        elapsed = time.perf_counter() - began
        await fleet.step(2)
        await fleet.stop()
    assert elapsed < 10
    assert as_tuples(gw.readings) == sorted((e.device, e.metric, e.value, e.ts) for e in fleet.expected)
    assert gw.ctx.counters["connections"] == 100


async def test_dropped_charge_point_reconnects_and_replaces_its_session(tmp_path: Path) -> None:
    async with running_driver(tmp_path) as gw:
        fleet = Fleet(FleetConfig(url=gw.url, version="1.6", charge_points=1, connectors=1))
        cp = fleet.charge_points[0]
        await fleet.start()
        started = await cp.call(call16.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=100,
                                                        timestamp="2026-01-01T00:00:01Z"))
        await cp.drop()
        await async_wait_for(lambda: not gw.driver.connected, timeout=5, what="gateway saw the drop")
        # the next CALL finds the connection closed and reconnects; the transaction is still known
        await cp.call(call16.StopTransaction(meter_stop=250, timestamp="2026-01-01T00:00:02Z",
                                             transaction_id=started.transaction_id))
        await fleet.step(3)
        # a second connection with the same id replaces the first one
        async with websockets.connect(gw.url + "SIM0000", subprotocols=["ocpp1.6"]) as newer:
            await async_wait_for(lambda: gw.driver.connected.get("SIM0000") is not None
                                 and gw.ctx.counters.get("replaced_connections") == 1,
                                 timeout=5, what="replacement")
            assert (await _exchange(newer, '[2, "x1", "Heartbeat", {}]'))[:2] == [3, "x1"]
        await fleet.stop()
    assert cp.connects == 2
    manual = [("ocpp:SIM0000/1", "energy_active_import_register", 100.0, 1767225601.0),
              ("ocpp:SIM0000/1", "energy_active_import_register", 250.0, 1767225602.0)]
    assert as_tuples(gw.readings) == sorted([(e.device, e.metric, e.value, e.ts) for e in fleet.expected] + manual)
    assert gw.ctx.decode_errors == {}


async def test_three_connections_of_one_charge_point_leave_only_the_newest_open(tmp_path: Path) -> None:
    """The second connection waits for the first one's close handshake; a third arriving then
    must replace the second, not close the first again and leave the second open beside it."""
    async with running_driver(tmp_path) as gw:
        first = await websockets.connect(gw.url + "SIM0003", subprotocols=["ocpp1.6"])
        await async_wait_for(lambda: "SIM0003" in gw.driver.connected, timeout=5, what="the first")
        second, third = await asyncio.gather(websockets.connect(gw.url + "SIM0003", subprotocols=["ocpp1.6"]),
                                             websockets.connect(gw.url + "SIM0003", subprotocols=["ocpp1.6"]))
        try:
            await async_wait_for(lambda: gw.ctx.counters.get("replaced_connections") == 2, timeout=10,
                                 what="two replacements")
            connections = (first, second, third)
            await async_wait_for(lambda: sum(c.close_code is not None for c in connections) == 2, timeout=10,
                                 what="two closed by the gateway")
            assert sorted(c.close_code for c in connections if c.close_code is not None) == [1000, 1000]
            newest = next(c for c in connections if c.close_code is None)
            assert len(gw.driver.connected) == 1
            assert (await _exchange(newest, '[2, "h1", "Heartbeat", {}]'))[:2] == [3, "h1"]
        finally:
            for connection in (first, second, third):
                await connection.close()


async def test_port_in_use_is_a_driver_error(tmp_path: Path) -> None:
    from gateway.errors import DriverError

    async with running_driver(tmp_path) as gw:
        with pytest.raises(DriverError, match="cannot listen"):
            async with running_driver(tmp_path, port=gw.driver.port):
                pass


@pytest.mark.slow  # a real process
async def test_simulator_cli_against_the_endpoint(tmp_path: Path) -> None:
    import sys

    async with running_driver(tmp_path) as gw:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.cli", "ocpp", "--url", gw.url, "-n", "3", "-m", "1",
            "--version", "2.0.1", "--tick", "0.05", "--duration", "0.5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "3 charge points" in out.decode()
    expected = int(out.decode().split(" readings expected")[0].rsplit(" ", 1)[-1])
    assert len(gw.readings) == expected > 0


async def test_require_password_refuses_pattern_only_ids_and_boot_answers_the_interval(tmp_path: Path) -> None:
    settings = {"passwords": {"SIM0000": "correct-horse-1"}, "allowed_ids": ["OPEN-[0-9]+"],
                "require_password": True, "heartbeat_interval": 42}
    async with running_driver(tmp_path, **settings) as gw:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(gw.url + "OPEN-1", subprotocols=["ocpp1.6"])
        assert refused.value.response.status_code == 404
        async with websockets.connect(gw.url + "SIM0000", subprotocols=["ocpp1.6"],
                                      additional_headers=_basic("SIM0000", "correct-horse-1")) as cp:
            boot = {"chargePointVendor": "V", "chargePointModel": "M"}
            answer = await _exchange(cp, json.dumps([2, "b1", "BootNotification", boot]))
            assert answer[:2] == [3, "b1"] and answer[2]["interval"] == 42 and answer[2]["status"] == "Accepted"


async def test_a_gateway_restart_keeps_the_open_transactions(tmp_path: Path) -> None:
    """Issue 17: every restart forgot which connector a transaction ran on, so the stop's
    meter value (and 2.0.1's later events) were lost as unknown transactions."""
    async with running_driver(tmp_path) as gw:
        fleet = Fleet(FleetConfig(url=gw.url, version="1.6", charge_points=1, connectors=2, report=False))
        cp = fleet.charge_points[0]
        await fleet.start()
        started = await cp.call(call16.StartTransaction(connector_id=2, id_tag="TAG1", meter_start=100,
                                                        timestamp="2026-01-01T00:00:01Z"))
        await fleet.stop()
    # the first driver is gone (closed as on SIGTERM); a new one on the same state directory
    async with running_driver(tmp_path) as again:
        fleet = Fleet(FleetConfig(url=again.url, version="1.6", charge_points=1, connectors=2, report=False))
        cp = fleet.charge_points[0]
        await fleet.start()
        await cp.call(call16.StopTransaction(meter_stop=250, timestamp="2026-01-01T00:00:02Z",
                                             transaction_id=started.transaction_id))
        await fleet.stop()
    stops = [r for r in again.readings if r.metric == "energy_active_import_register"]
    assert [(r.device, r.value) for r in stops] == [("ocpp:SIM0000/2", 250.0)]
    assert again.ctx.decode_errors == {}
    # the finished transaction was forgotten and written so
    assert json.loads((tmp_path / "ocpp-transactions.json").read_text()) == {}
