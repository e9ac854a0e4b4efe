"""Proxy mode against the CSMS stand-in: frames relayed unchanged, readings mirrored, outages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ocpp.v16 import call as call16

from gateway.model import Severity
from simulators.ocpp import CsmsStandIn, Fleet, FleetConfig
from tests.drivers.ocpp.support import as_tuples, running_driver
from tests.support.ports import free_port
from tests.support.wait import async_wait_for


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_proxy_relays_every_frame_unchanged_and_mirrors_readings(tmp_path: Path, version: str) -> None:
    csms = CsmsStandIn()
    await csms.start()
    try:
        async with running_driver(tmp_path, upstream_url=csms.url, passwords={"SIM0000": "secret-pass-0"},
                                  allowed_ids=["SIM000[1-9]"]) as gw:
            fleet = Fleet(FleetConfig(url=gw.url, version=version, charge_points=2, connectors=2, seed=3,
                                      fault_probability=0.1, plug_probability=0.5,
                                      passwords={"SIM0000": "secret-pass-0"}))
            await fleet.start()
            await fleet.step(15)
            # a CALL from the CSMS reaches the charge point and its answer comes back
            payload = ({"connectorId": 1, "type": "Inoperative"} if version == "1.6"
                       else {"operationalStatus": "Inoperative"})
            answer = await csms.call("SIM0001", "ChangeAvailability", payload)
            assert answer[0] == 3 and answer[2]["status"] in ("Accepted", "Scheduled")
            await fleet.step(12)  # a busy connector switches once its session ended
            # the charge point reports its idle connectors Unavailable: a warning event each
            await async_wait_for(lambda: any(e.severity is Severity.WARNING for e in gw.events),
                                 timeout=10, what="Unavailable event")
            await fleet.stop()
            await async_wait_for(lambda: len(gw.readings) == len(fleet.expected), timeout=10, what="readings")
    finally:
        await csms.stop()
    for cp in fleet.charge_points:
        # byte for byte, in order, both ways
        assert csms.received[cp.ident] == cp.sent
        assert cp.received == csms.sent[cp.ident]
        assert csms.subprotocol[cp.ident] == ("ocpp1.6" if version == "1.6" else "ocpp2.0.1")
    assert csms.authorization["SIM0000"] is not None and csms.authorization["SIM0001"] is None
    assert as_tuples(gw.readings) == sorted((e.device, e.metric, e.value, e.ts) for e in fleet.expected)
    assert gw.ctx.decode_errors == {}  # 1.6 StopTransaction found its connector via the CSMS's id
    assert gw.ctx.counters.get("offline_answers", 0) == 0
    unavailable = [e for e in fleet.expected if e.value == "Unavailable"]
    assert sorted((e.device, e.ts) for e in gw.events if e.severity is Severity.WARNING) == sorted(
        (e.device, e.ts) for e in unavailable)
    assert all(e.device.startswith("ocpp:SIM0001/") for e in unavailable)


async def test_proxy_outage_answers_locally_and_reconnects(tmp_path: Path) -> None:
    port = free_port()
    csms = CsmsStandIn(port=port)  # not started yet: the CSMS is down when the charge point comes
    async with running_driver(tmp_path, upstream_url=f"ws://127.0.0.1:{port}/", heartbeat_interval=77,
                              upstream_backoff_initial=0.05, upstream_backoff_max=0.2) as gw:
        fleet = Fleet(FleetConfig(url=gw.url, version="1.6", charge_points=1, connectors=1))
        cp = fleet.charge_points[0]
        await fleet.start()  # BootNotification and StatusNotifications answered by the gateway
        boot = json.loads(cp.received[0])
        assert boot[0] == 3 and boot[2]["status"] == "Accepted" and boot[2]["interval"] == 77
        assert gw.ctx.counters["offline_answers"] == 3
        assert {r.device for r in gw.readings} == {"ocpp:SIM0000/0", "ocpp:SIM0000/1"}

        await csms.start()  # the CSMS comes up: the gateway links and asks for a fresh status
        await async_wait_for(lambda: any('"StatusNotification"' in f for f in csms.received["SIM0000"]),
                             timeout=10, what="status relayed after reconnect")
        assert gw.ctx.counters["upstream_connects"] == 1
        heartbeat_at = len(cp.sent)
        await cp.call(call16.Heartbeat())
        assert cp.sent[heartbeat_at] in csms.received["SIM0000"]

        await csms.stop()  # outage: Heartbeat answered locally, a transaction is refused for retry
        await async_wait_for(lambda: gw.ctx.counters.get("upstream_disconnects", 0) == 1, timeout=10,
                             what="link loss noticed")
        await cp.call(call16.Heartbeat())
        assert json.loads(cp.received[-1])[0] == 3
        before = len(cp.received)
        await cp.call(call16.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=5,
                                              timestamp="2026-01-01T00:00:00Z"))
        refused = json.loads(cp.received[before])
        assert refused[0] == 4 and refused[2] == "InternalError"
        assert gw.ctx.counters["offline_callerrors"] == 1

        csms.port = port
        await csms.start()
        await async_wait_for(lambda: gw.ctx.counters.get("upstream_connects", 0) == 2, timeout=10,
                             what="reconnect after the outage")
        await fleet.stop()
    await csms.stop()
    assert cp.connects == 1  # the charge point never lost its connection


async def test_proxy_relays_malformed_frames_and_polls_through_the_gate(tmp_path: Path) -> None:
    import websockets

    csms = CsmsStandIn()
    await csms.start()
    try:
        async with running_driver(tmp_path, upstream_url=csms.url, poll_interval=1.0) as gw:
            async with websockets.connect(gw.url + "SIM0005", subprotocols=["ocpp1.6"]) as cp:
                await cp.send("{oops")  # relayed as is: the CSMS, not the gateway, answers it
                answer = json.loads(await cp.recv())
                assert answer[:3] == [4, "-1", "FormationViolation"]
                assert csms.received["SIM0005"] == ["{oops"]
                # the poll: a TriggerMessage with a gateway id; its answer is not relayed
                trigger = json.loads(await cp.recv())
                assert trigger[0] == 2 and trigger[1].startswith("gw-") and trigger[2] == "TriggerMessage"
                await cp.send(json.dumps([3, trigger[1], {"status": "Accepted"}]))
                status = {"connectorId": 1, "errorCode": "NoError", "status": "Available",
                          "timestamp": "2026-01-01T00:00:00Z"}
                await cp.send(json.dumps([2, "s1", "StatusNotification", status]))
                while True:  # the MeterValues trigger may come first: answer it, too
                    frame = json.loads(await cp.recv())
                    if frame[0] == 2:
                        assert frame[1].startswith("gw-") and frame[3] == {"requestedMessage": "MeterValues"}
                        await cp.send(json.dumps([3, frame[1], {"status": "Rejected"}]))
                        continue
                    assert frame == [3, "s1", {}]
                    break
                await async_wait_for(lambda: gw.readings, timeout=5, what="mirrored status")
            assert all("gw-" not in frame for frame in csms.received["SIM0005"])
    finally:
        await csms.stop()
    assert gw.readings[0].device == "ocpp:SIM0005/1" and gw.readings[0].value == "Available"
    assert gw.ctx.decode_errors == {"not_json": 1}


async def test_proxy_answers_malformed_frames_itself_while_the_csms_is_away(tmp_path: Path) -> None:
    import websockets

    port = free_port()
    async with running_driver(tmp_path, upstream_url=f"ws://127.0.0.1:{port}/",
                              upstream_backoff_initial=5.0) as gw:
        async with websockets.connect(gw.url + "SIM0006", subprotocols=["ocpp2.0.1"]) as cp:
            await cp.send("[2, 5, \"Heartbeat\", {}]")
            assert json.loads(await cp.recv())[:3] == [4, "-1", "RpcFrameworkError"]
            await cp.send('[2, "h1", "Heartbeat", {}]')
            answer = json.loads(await cp.recv())
            assert answer[:2] == [3, "h1"] and "currentTime" in answer[2]
    assert gw.ctx.counters["upstream_failures"] == 1


async def test_proxy_to_a_wss_csms_forwards_the_charge_points_credentials(tmp_path: Path) -> None:
    import ssl

    from tests.support.mosquitto import make_tls

    tls = make_tls(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tls.server_cert, tls.server_key)
    csms = CsmsStandIn(tls=server_tls)
    await csms.start()
    try:
        async with running_driver(tmp_path, upstream_url=csms.url, upstream_ca_file=str(tls.ca),
                                  passwords={"SIM0000": "secret-pass-0"}) as gw:
            fleet = Fleet(FleetConfig(url=gw.url, version="2.0.1", charge_points=1, connectors=1,
                                      passwords={"*": "secret-pass-0"}))
            await fleet.start()
            await fleet.step(3)
            await fleet.stop()
    finally:
        await csms.stop()
    cp = fleet.charge_points[0]
    assert csms.received["SIM0000"] == cp.sent and cp.received == csms.sent["SIM0000"]
    assert csms.authorization["SIM0000"] == fleet.charge_points[0]._headers()["Authorization"]
    assert gw.ctx.counters["upstream_connects"] == 1
