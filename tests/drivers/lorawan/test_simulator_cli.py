"""`edge-gateway-sim lorawan`: the CLI runs a forwarder against a real UDP listener."""

from __future__ import annotations

import asyncio
import socket

import pytest

from drivers.lorawan import semtech_udp
from simulators.cli import main as sim_main
from simulators.lorawan.cli import main

# slow: the simulator as a real process (make test-fast leaves it out)
pytestmark = pytest.mark.slow


def test_help_and_devices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        sim_main(["lorawan", "--help"])
    assert info.value.code == 0
    assert "forwarder" in capsys.readouterr().out
    assert main(["devices", "--per-family", "1", "--families", "elsys,milesight"]) == 0
    out = capsys.readouterr().out
    assert out.count("[[drivers.devices]]") == 2 and 'activation = "otaa"' in out


def test_forwarder_cli_sends_real_datagrams() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]
    try:
        async def run() -> int:
            return await asyncio.to_thread(main, ["forwarder", "--server", f"127.0.0.1:{port}", "--otaa-every", "0",
                                                  "--families", "elsys", "--interval", "0.05", "--duration", "0.2"])
        seen: list[int] = []

        def receive() -> None:
            while len(seen) < 3:
                data, addr = server.recvfrom(4096)
                datagram = semtech_udp.parse_datagram(data)
                seen.append(datagram.ident)
                if datagram.ident == semtech_udp.Ident.PUSH_DATA:
                    server.sendto(semtech_udp.build_push_ack(datagram.token), addr)

        async def both() -> int:
            receiver = asyncio.create_task(asyncio.to_thread(receive))
            code = await run()
            await receiver
            return code

        assert asyncio.run(both()) == 0
        assert semtech_udp.Ident.PULL_DATA in seen and semtech_udp.Ident.PUSH_DATA in seen
    finally:
        server.close()
