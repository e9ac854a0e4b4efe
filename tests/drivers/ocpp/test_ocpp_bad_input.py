"""Charge points that misbehave get a clear close code and a counter, and never slow the others.

Three misbehaviours at once (issue 12, "Bad input"): one floods CALLs without waiting for the
answers, one sends a frame over `max_message_bytes`, one opens TCP and never finishes its
opening handshake (slowloris). Meanwhile well-behaved charge points keep exchanging Heartbeats;
their worst round trip must stay bounded (loosely: the test must pass on a busy 2-core machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.drivers.ocpp.support import running_driver
from tests.support.wait import async_wait_for

# A busy 2-core machine can stall a process for a few hundred ms; an endpoint that serves a
# flooder first would stall the others for seconds (the flood below is 20,000 frames).
LATENCY_BOUND_S = 2.0


async def _heartbeats(url: str, ident: str, stop: asyncio.Event, latencies: list[float]) -> None:
    async with websockets.connect(url + ident, subprotocols=["ocpp1.6"]) as cp:
        n = 0
        while not stop.is_set():
            began = time.perf_counter()
            await cp.send(json.dumps([2, f"{ident}-{n}", "Heartbeat", {}]))
            answer = json.loads(await asyncio.wait_for(cp.recv(), 10))
            latencies.append(time.perf_counter() - began)
            assert answer[:2] == [3, f"{ident}-{n}"]
            n += 1
            await asyncio.sleep(0.05)  # pacing a conforming charge point (20/s), not synchronising


async def _flood(url: str) -> int:
    """Send Heartbeat CALLs without reading answers; return the close code the gateway sent."""
    async def drain(cp: websockets.ClientConnection) -> None:
        # reads the answers so the gateway's close frame is seen, and nothing else
        with contextlib.suppress(ConnectionClosed):
            while True:
                await cp.recv()

    async with websockets.connect(url + "SIM0666", subprotocols=["ocpp1.6"]) as cp:
        reader = asyncio.ensure_future(drain(cp))
        with contextlib.suppress(ConnectionClosed):
            for n in range(20_000):
                await cp.send(f'[2, "f{n}", "Heartbeat", {{}}]')
        await asyncio.wait_for(cp.wait_closed(), 10)
        await reader
        assert cp.close_code is not None
        return cp.close_code


async def _oversized(url: str) -> int:
    async with websockets.connect(url + "SIM0777", subprotocols=["ocpp1.6"], max_size=None) as cp:
        payload = {"vendorId": "x", "data": "y" * 5000}  # > max_message_bytes below
        try:
            await cp.send(json.dumps([2, "big", "DataTransfer", payload]))
            await asyncio.wait_for(cp.recv(), 10)
        except ConnectionClosed:
            pass
        await asyncio.wait_for(cp.wait_closed(), 10)
        assert cp.close_code is not None
        return cp.close_code


async def _slowloris(port: int) -> float:
    """Open TCP, send half a request line, and wait for the gateway to hang up."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, b"GET /SIM0888 HTTP/1.1\r\nHost: x\r\n")
        began = time.perf_counter()
        data = await asyncio.wait_for(loop.sock_recv(sock, 1024), 15)
        assert data == b""  # closed without an answer: nothing to say to half a request
        return time.perf_counter() - began
    finally:
        sock.close()


async def test_misbehaving_charge_points_are_closed_and_never_slow_the_others(tmp_path: Path) -> None:
    settings = {"max_frames_per_second": 30.0, "max_frames_burst": 100, "max_message_bytes": 4096,
                "handshake_timeout": 1.0}
    async with running_driver(tmp_path, **settings) as gw:
        stop = asyncio.Event()
        latencies: dict[str, list[float]] = {f"SIM000{i}": [] for i in range(3)}
        good = [asyncio.ensure_future(_heartbeats(gw.url, ident, stop, lat)) for ident, lat in latencies.items()]
        await async_wait_for(lambda: all(len(lat) >= 5 for lat in latencies.values()), timeout=10,
                             what="well-behaved charge points running")
        flood_code, big_code, hung_up_after = await asyncio.gather(
            _flood(gw.url), _oversized(gw.url), _slowloris(gw.driver.port))
        during = {ident: len(lat) for ident, lat in latencies.items()}
        await async_wait_for(lambda: all(len(lat) >= during[i] + 5 for i, lat in latencies.items()),
                             timeout=10, what="the others still served afterwards")
        stop.set()
        await asyncio.gather(*good)
        await async_wait_for(lambda: gw.ctx.counters.get("handshake_incomplete") == 1, timeout=5,
                             what="the slowloris counted")
    assert flood_code == 1008  # policy violation
    assert big_code == 1009  # message too big
    assert 0.5 < hung_up_after < 10
    assert gw.ctx.counters["closed_flood"] == 1
    assert gw.ctx.counters["closed_message_too_big"] == 1
    assert gw.ctx.counters["handshake_incomplete"] == 1
    assert gw.ctx.decode_errors["frame_rate_exceeded"] == 1
    assert gw.ctx.decode_errors["frame_too_big"] == 1
    worst = max(max(lat) for lat in latencies.values())
    assert worst < LATENCY_BOUND_S, f"a well-behaved charge point waited {worst:.2f} s"


async def test_connections_over_the_cap_get_503(tmp_path: Path) -> None:
    async with running_driver(tmp_path, max_connections=3) as gw:
        async with websockets.connect(gw.url + "SIM0001", subprotocols=["ocpp1.6"]), \
                websockets.connect(gw.url + "SIM0002", subprotocols=["ocpp1.6"]), \
                websockets.connect(gw.url + "SIM0003", subprotocols=["ocpp1.6"]):
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(gw.url + "SIM0004", subprotocols=["ocpp1.6"])
            assert refused.value.response.status_code == 503
        # once the others left, a new one is admitted again
        await async_wait_for(lambda: not gw.driver.connected, timeout=5, what="all disconnected")
        async with websockets.connect(gw.url + "SIM0005", subprotocols=["ocpp1.6"]) as cp:
            await cp.send('[2, "h", "Heartbeat", {}]')
            assert json.loads(await cp.recv())[:2] == [3, "h"]
    assert gw.ctx.counters["refused_connection_cap"] == 1


async def test_unsolicited_answers_are_counted_dropped_and_logged_once(tmp_path: Path) -> None:
    # issue 17: an unsolicited CALLRESULT flood grew an unbounded response queue (+460 MB) and
    # logged every body at ERROR. Now nothing holds them: counted per cause, logged once each.
    lines: list[dict] = []

    class Log:
        def warning(self, message: str, **fields: object) -> None:
            lines.append({"message": message, **fields})

        def info(self, message: str, **fields: object) -> None:
            pass

    async with running_driver(tmp_path, max_frames_per_second=0) as gw:
        gw.ctx.log = Log()
        async with websockets.connect(gw.url + "SIM0001", subprotocols=["ocpp1.6"]) as cp:
            for n in range(2000):
                await cp.send(f'[3, "u{n}", {{"status": "Accepted", "pad": "{"x" * 100}"}}]')
            for n in range(500):
                await cp.send(f'[4, "e{n}", "GenericError", "", {{}}]')
            await cp.send('[2, "h", "Heartbeat", {}]')
            assert json.loads(await asyncio.wait_for(cp.recv(), 10))[:2] == [3, "h"]
    assert gw.ctx.decode_errors["unmatched_callresult"] == 2000
    assert gw.ctx.decode_errors["unmatched_callerror"] == 500
    assert sorted(line["cause"] for line in lines) == ["unmatched_callerror", "unmatched_callresult"]
    assert all(len(str(line)) < 400 for line in lines)  # the message id, never the body


async def test_accept_errors_are_counted_and_logged_once_per_cause(tmp_path: Path) -> None:
    # asyncio reports every failed accept() through the loop's exception handler (that is how
    # descriptor exhaustion produced 457,353 tracebacks); the driver takes its own sockets' ones.
    import errno

    lines: list[dict] = []
    others: list[dict] = []

    class Log:
        def warning(self, message: str, **fields: object) -> None:
            lines.append(fields)

        def info(self, message: str, **fields: object) -> None:
            pass

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: others.append(context))
    try:
        async with running_driver(tmp_path) as gw:
            gw.ctx.log = Log()
            (sock,) = gw.driver._server.sockets  # noqa: SLF001 - the listening socket asyncio names
            for code in [errno.EMFILE] * 1000 + [errno.ENFILE] * 10:
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(code, "x"), "socket": sock})
            loop.call_exception_handler({"message": "unrelated", "exception": OSError(errno.EMFILE, "x")})
        assert gw.ctx.counters["accept_errors"] == 1010
        assert [line["cause"] for line in lines] == ["EMFILE", "ENFILE"]
        assert [c["message"] for c in others] == ["unrelated"]
        assert loop.get_exception_handler() is not None  # the test's own handler is back
    finally:
        loop.set_exception_handler(None)
