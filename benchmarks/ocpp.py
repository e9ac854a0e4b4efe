"""OCPP endpoint throughput: MeterValues CALLs per second with many connected charge points.

Each simulated charge point is a bare websockets client that sends a 1.6 MeterValues CALL
(five sampled values) and waits for the answer before the next, as OCPP-J allows one
outstanding CALL per direction. The gateway's endpoint validates the payload against the
schema, answers and mirrors it into readings. The baseline in the same run is a bare websockets
echo server fed the same frames by the same clients: the cost of the WebSocket layer alone.
A third figure runs the same load through proxy mode (relay + mirror) to an echo "CSMS".

    .venv/bin/python -m benchmarks.ocpp [--charge-points 50] [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import websockets
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.report import Measurement, peak_rss_mib, print_ratio
from drivers.ocpp import Config
from drivers.ocpp.driver import OcppDriver
from gateway.driver import DriverContext


def _frames(charge_point: int, count: int) -> list[str]:
    encode = msgspec.json.Encoder().encode
    frames = []
    for n in range(count):
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_767_225_600 + n * 10))
        samples = [
            {"value": f"{1000 + n * 3}", "context": "Sample.Periodic",
             "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "11000", "context": "Sample.Periodic", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": "47.8", "context": "Sample.Periodic", "measurand": "Current.Import", "unit": "A"},
            {"value": "230.0", "context": "Sample.Periodic", "measurand": "Voltage", "unit": "V"},
            {"value": "55", "context": "Sample.Periodic", "measurand": "SoC", "unit": "Percent"},
        ]
        payload = {"connectorId": 1, "meterValue": [{"timestamp": ts, "sampledValue": samples}]}
        frames.append(encode([2, f"{charge_point}-{n}", "MeterValues", payload]).decode())
    return frames


async def _drive(url: str, charge_points: int, messages: int) -> tuple[float, float, int]:
    """Connect every charge point, then time all of them sending their frames."""
    frames = [_frames(i, messages) for i in range(charge_points)]
    connections = [
        await websockets.connect(f"{url}BENCH{i:04d}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                 compression=None, ping_interval=None, max_size=2**20)
        for i in range(charge_points)
    ]

    async def run(connection: Any, mine: list[str]) -> int:
        for frame in mine:
            await connection.send(frame)
            await connection.recv()
        return len(mine)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = await asyncio.gather(*(run(c, f) for c, f in zip(connections, frames, strict=True)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for connection in connections:
        await connection.close()
    return wall, cpu, sum(done)


async def _echo(connection: ServerConnection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for frame in connection:
            await connection.send(frame)


async def _baseline(charge_points: int, messages: int) -> Measurement:
    async with serve(_echo, "127.0.0.1", 0, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                     compression=None, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        wall, cpu, count = await _drive(f"ws://127.0.0.1:{port}/", charge_points, messages)
    return Measurement("bare websockets echo", count, wall, cpu)


async def _gateway(charge_points: int, messages: int, upstream: str = "") -> tuple[Measurement, int]:
    readings: list[Any] = []
    with tempfile.TemporaryDirectory() as state:
        ctx = DriverContext("ocpp", gateway_id="bench", state_dir=Path(state),
                            submit=readings.append, submit_event=lambda e: None)
        config = Config(type="ocpp", name="ocpp", host="127.0.0.1", port=0, allowed_ids=["BENCH[0-9]+"],
                        ping_interval=0, upstream_url=upstream)
        driver = OcppDriver(config, ctx)
        task = asyncio.ensure_future(driver.run())
        await driver.listening.wait()
        try:
            wall, cpu, count = await _drive(f"ws://127.0.0.1:{driver.port}/", charge_points, messages)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    name = "gateway proxy (relay+mirror)" if upstream else "gateway endpoint (validate+mirror)"
    return Measurement(name, count, wall, cpu), len(readings)


async def _proxy(charge_points: int, messages: int) -> tuple[Measurement, int]:
    async def csms(connection: ServerConnection) -> None:
        # answers every CALL with an empty CALLRESULT, like a CSMS acknowledging MeterValues
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in connection:
                message_id = frame[frame.index('"') + 1: frame.index('"', frame.index('"') + 1)]
                await connection.send(f'[3,"{message_id}",{{}}]')

    async with serve(csms, "127.0.0.1", 0, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                     compression=None, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        return await _gateway(charge_points, messages, upstream=f"ws://127.0.0.1:{port}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ocpp")
    parser.add_argument("--charge-points", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200, help="MeterValues CALLs per charge point")
    parser.add_argument("--runs", type=int, default=2, help="best of this many runs per figure")
    args = parser.parse_args(argv)

    def best(results: list[Any]) -> Any:
        return min(results, key=lambda r: (r[0] if isinstance(r, tuple) else r).wall_seconds)

    baseline = best([asyncio.run(_baseline(args.charge_points, args.messages)) for _ in range(args.runs)])
    endpoint, readings = best([asyncio.run(_gateway(args.charge_points, args.messages)) for _ in range(args.runs)])
    proxy, proxy_readings = best([asyncio.run(_proxy(args.charge_points, args.messages)) for _ in range(args.runs)])
    print(f"{args.charge_points} charge points connected, {args.messages} MeterValues CALLs each"
          f" (5 sampled values per CALL)")
    print_ratio("OCPP endpoint: CALLs answered per second", endpoint, baseline, "msg/s")
    print(f"  readings mirrored: {readings:,} ({readings / endpoint.wall_seconds:,.0f} readings/s)")
    print_ratio("OCPP proxy: CALLs relayed per second (CSMS answers)", proxy, baseline, "msg/s")
    print(f"  readings mirrored: {proxy_readings:,}")
    print(f"  peak RSS: {peak_rss_mib():.1f} MiB (clients, servers and gateway in one process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
