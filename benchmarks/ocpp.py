"""OCPP endpoint against a bare websockets echo: calls/s, boot CPU and memory per charge point.

Three processes per round: the server under test (a bare websockets echo, the gateway's
endpoint, or the gateway in proxy mode), the charge point clients, and this one, which only
orchestrates. The clients (and, for the proxy, the CSMS stand-in answering it) never share a
process with the server, so the server's CPU and RSS are its own. Rounds are interleaved (echo,
endpoint, proxy, echo, ...) so a slow stretch of the shared machine hits subject and baseline
alike; each figure is the best of its rounds.

Per round:
1. boot: N charge points connect and each sends a 1.6 BootNotification and waits for the answer
   (the echo returns it), in two halves. Server CPU seconds over the whole boot per charge
   point, and RSS growth over the second half per charge point it added (the first half fills
   whatever free memory the process held after start-up, which would hide the cost).
2. calls: the first C of them send M MeterValues CALLs each (five sampled values), one
   outstanding CALL per charge point as OCPP-J allows. CALLs answered per second (client wall).

Verdicts (issue 12): endpoint calls/s >= 0.5 of the echo's; boot CPU <= 0.35 ms per charge point
above the echo's; memory <= 12 KiB per connected charge point (the endpoint's RSS growth per
charge point). Exit status 1 if any fails. The proxy figure is printed for information.

    .venv/bin/python -m benchmarks.ocpp [--boot 1000] [--charge-points 50] [--messages 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

CALLS_RATIO_MIN = 0.5
BOOT_CPU_MS_MAX = 0.35  # above the echo, per charge point
MEMORY_KIB_MAX = 12.0  # per connected charge point

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") / 1024


def _rss_kib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_KIB


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------------- the server process
def _server_main(kind: str, upstream: str, pipe: Connection) -> None:
    _raise_fd_limit()
    asyncio.run(_serve(kind, upstream, pipe))


async def _serve(kind: str, upstream: str, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop: contextlib.AsyncExitStack = contextlib.AsyncExitStack()
    if kind == "echo":
        import websockets
        from websockets.asyncio.server import ServerConnection, serve

        async def echo(connection: ServerConnection) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in connection:
                    await connection.send(frame)

        server = await stop.enter_async_context(serve(
            echo, "127.0.0.1", 0, subprotocols=["ocpp1.6"],  # type: ignore[list-item]  # websockets wants its Subprotocol NewType; a str is one at run time
            compression=None, ping_interval=None, max_size=65536))
        port = next(iter(server.sockets)).getsockname()[1]
    else:
        from drivers.ocpp import Config
        from drivers.ocpp.driver import OcppDriver
        from gateway.driver import DriverContext

        readings = [0]

        def count(reading: Any) -> None:
            readings[0] += 1

        state = stop.enter_context(tempfile.TemporaryDirectory())
        ctx = DriverContext("ocpp", gateway_id="bench", state_dir=Path(state), submit=count,
                            submit_event=lambda e: None)
        # Limits raised for a load test: the clients here send as fast as answers come.
        limits = {"max_connections": 100_000, "max_frames_per_second": 1_000_000.0}
        fields = set(Config.__struct_fields__)  # lets the same file measure older revisions
        config = Config(type="ocpp", name="ocpp", host="127.0.0.1", port=0, allowed_ids=["BENCH[0-9]+"],
                        ping_interval=0, upstream_url=upstream,
                        **{k: v for k, v in limits.items() if k in fields})  # type: ignore[arg-type]  # limits are Any from JSON
        driver = OcppDriver(config, ctx)
        task = asyncio.ensure_future(driver.run())
        await driver.listening.wait()
        port = driver.port
    pipe.send(port)
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "mark":
            pipe.send((time.process_time(), _rss_kib()))
        else:
            break
    if kind != "echo":
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await stop.aclose()
    pipe.send("stopped")


# ---------------------------------------------------------------------------- the client process
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


def _client_main(pipe: Connection) -> None:
    _raise_fd_limit()
    asyncio.run(_clients(pipe))


async def _clients(pipe: Connection) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    loop = asyncio.get_running_loop()
    connections: list[Any] = []
    csms: Any = None

    async def answer(connection: ServerConnection) -> None:
        # a CSMS acknowledging every CALL with an empty CALLRESULT
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in connection:
                message = msgspec.json.decode(frame)
                await connection.send(msgspec.json.encode([3, message[1], {}]).decode())

    async def boot(url: str, index: int) -> Any:
        connection = await websockets.connect(
            f"{url}BENCH{index:05d}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]  # websockets wants its Subprotocol NewType; a str is one at run time
            compression=None, ping_interval=None, max_size=2**20, open_timeout=60)
        await connection.send(msgspec.json.encode(
            [2, f"boot-{index}", "BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "B1"}]
        ).decode())
        await connection.recv()
        return connection

    async def run(connection: Any, frames: list[str]) -> int:
        for frame in frames:
            await connection.send(frame)
            await connection.recv()
        return len(frames)

    while True:
        command, *args = await loop.run_in_executor(None, pipe.recv)
        if command == "csms":
            csms = await serve(answer, "127.0.0.1", 0, subprotocols=["ocpp1.6"],  # type: ignore[list-item]  # websockets wants its Subprotocol NewType; a str is one at run time
                               compression=None, ping_interval=None)
            pipe.send(next(iter(csms.sockets)).getsockname()[1])
        elif command == "boot":
            url, first, count = args
            semaphore = asyncio.Semaphore(100)  # connect in waves, like a fleet after a power cut

            async def one(index: int, url: str = url, semaphore: asyncio.Semaphore = semaphore) -> Any:
                async with semaphore:
                    return await boot(url, index)

            began = time.perf_counter()
            connections += await asyncio.gather(*(one(i) for i in range(first, first + count)))
            pipe.send(time.perf_counter() - began)
        elif command == "calls":
            active, messages = args
            frames = [_frames(i, messages) for i in range(active)]
            began = time.perf_counter()
            done = await asyncio.gather(*(run(c, f) for c, f in zip(connections, frames, strict=False)))
            pipe.send((time.perf_counter() - began, sum(done)))
        elif command == "close":
            await asyncio.gather(*(c.close() for c in connections))
            connections = []
            if csms is not None:
                csms.close()
                await csms.wait_closed()
                csms = None
            pipe.send("closed")
        else:
            return


# ---------------------------------------------------------------------------- one round
@dataclass
class Round:
    kind: str
    boot_cpu_ms: float  # server CPU per charge point booted
    memory_kib: float  # server RSS growth per charge point connected
    calls: int
    calls_wall: float
    calls_cpu: float  # server CPU seconds for the calls

    @property
    def rate(self) -> float:
        return self.calls / self.calls_wall


def _round(kind: str, boot: int, active: int, messages: int) -> Round:
    context = multiprocessing.get_context("spawn")
    client_pipe, client_end = context.Pipe()
    clients = context.Process(target=_client_main, args=(client_end,), daemon=True)
    clients.start()
    upstream = ""
    if kind == "proxy":
        client_pipe.send(("csms",))
        upstream = f"ws://127.0.0.1:{client_pipe.recv()}/"
    server_pipe, server_end = context.Pipe()
    server = context.Process(target=_server_main, args=(kind, upstream, server_end), daemon=True)
    server.start()
    try:
        port = server_pipe.recv()
        server_pipe.send("mark")
        cpu0, rss0 = server_pipe.recv()
        # Two halves: CPU over both, memory over the second only, so the free memory a process
        # holds after start-up (which the first connections fill) does not hide their cost.
        half = boot // 2
        client_pipe.send(("boot", f"ws://127.0.0.1:{port}/", 0, half))
        client_pipe.recv()
        server_pipe.send("mark")
        _, rss0 = server_pipe.recv()
        client_pipe.send(("boot", f"ws://127.0.0.1:{port}/", half, boot - half))
        client_pipe.recv()
        server_pipe.send("mark")
        cpu1, rss1 = server_pipe.recv()
        client_pipe.send(("calls", active, messages))
        wall, count = client_pipe.recv()
        server_pipe.send("mark")
        cpu2, _ = server_pipe.recv()
        client_pipe.send(("close",))
        client_pipe.recv()
        server_pipe.send("stop")
        server_pipe.recv()
        client_pipe.send(("exit",))
    finally:
        for process in (server, clients):
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return Round(kind, (cpu1 - cpu0) * 1000 / boot, (rss1 - rss0) / (boot - half), count, wall, cpu2 - cpu1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ocpp")
    parser.add_argument("--boot", type=int, default=1000, help="charge points that connect and boot")
    parser.add_argument("--charge-points", type=int, default=50, help="of them, how many send MeterValues")
    parser.add_argument("--messages", type=int, default=200, help="MeterValues CALLs per active charge point")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds; each figure is the best")
    parser.add_argument("--no-proxy", action="store_true", help="skip the proxy figure")
    args = parser.parse_args(argv)
    kinds = ["echo", "endpoint"] + ([] if args.no_proxy else ["proxy"])
    rounds: dict[str, list[Round]] = {k: [] for k in kinds}
    for _ in range(args.runs):
        for kind in kinds:
            rounds[kind].append(_round(kind, args.boot, args.charge_points, args.messages))

    def best(kind: str) -> tuple[float, float, float, float]:
        rs = rounds[kind]
        top = max(rs, key=lambda r: r.rate)
        return (top.rate, top.calls_cpu * 1e6 / top.calls, min(r.boot_cpu_ms for r in rs),
                min(r.memory_kib for r in rs))

    echo = best("echo")
    endpoint = best("endpoint")
    print(f"{args.boot} charge points connect and boot; {args.charge_points} of them send"
          f" {args.messages} MeterValues CALLs each (5 sampled values); best of {args.runs} interleaved rounds;"
          f" clients and server in separate processes")
    print(f"{'server':<26}{'calls/s':>10}{'CPU us/call':>13}{'boot CPU ms/CP':>16}{'RSS KiB/CP':>12}")
    for kind in kinds:
        rate, cpu_call, boot_ms, mem = best(kind)
        print(f"{kind:<26}{rate:>10,.0f}{cpu_call:>13,.0f}{boot_ms:>16.3f}{mem:>12.1f}")
    calls_ratio = endpoint[0] / echo[0]
    boot_above = endpoint[2] - echo[2]
    verdicts = [
        (f"endpoint calls/s vs echo: {calls_ratio:.2f} (need >= {CALLS_RATIO_MIN})", calls_ratio >= CALLS_RATIO_MIN),
        (f"endpoint boot CPU above echo: {boot_above:.3f} ms per charge point (need <= {BOOT_CPU_MS_MAX})",
         boot_above <= BOOT_CPU_MS_MAX),
        (f"endpoint memory: {endpoint[3]:.1f} KiB per connected charge point (need <= {MEMORY_KIB_MAX};"
         f" the echo holds {echo[3]:.1f})", endpoint[3] <= MEMORY_KIB_MAX),
    ]
    if "proxy" in rounds:
        print(f"proxy calls/s vs echo: {best('proxy')[0] / echo[0]:.2f} (information, no verdict)")
    failed = 0
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
