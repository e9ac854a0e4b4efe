"""A CSMS stand-in for proxy-mode tests: records every raw frame, answers the charge point CALLs.

It never re-serialises what it receives: `received[cp]` holds the exact text frames that
arrived, `sent[cp]` what it sent, so a test can check that a proxy relayed them unchanged. It
can be stopped and started again on the same port to play an outage, and can send CALLs of its
own to a charge point (e.g. TriggerMessage or ChangeAvailability).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["CsmsStandIn"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class CsmsStandIn:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, heartbeat_interval: int = 600,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.tls = tls
        self.port = port
        self.heartbeat_interval = heartbeat_interval
        self.received: dict[str, list[str]] = defaultdict(list)
        self.sent: dict[str, list[str]] = defaultdict(list)
        self.authorization: dict[str, str | None] = {}
        self.subprotocol: dict[str, str | None] = {}
        self.connections: dict[str, ServerConnection] = {}
        self.connects = 0
        self._server: Server | None = None
        self._transactions = itertools.count(1000)
        self._answers: dict[str, asyncio.Future[Any]] = {}

    @property
    def url(self) -> str:
        if self.tls is not None:  # the test certificate names localhost
            return f"wss://localhost:{self.port}/"
        return f"ws://{self.host}:{self.port}/"

    async def start(self) -> None:
        self._server = await serve(
            self._handle, self.host, self.port, subprotocols=["ocpp2.0.1", "ocpp1.6"],  # type: ignore[list-item]  # websockets wants its Subprotocol NewType; a str is one at run time
            compression=None, ping_interval=None, ssl=self.tls,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        self.connections.clear()

    async def _handle(self, connection: ServerConnection) -> None:
        ident = connection.request.path.strip("/").rsplit("/", 1)[-1] if connection.request else "?"
        self.connects += 1
        self.connections[ident] = connection
        self.authorization[ident] = connection.request.headers.get("Authorization") if connection.request else None
        self.subprotocol[ident] = connection.subprotocol
        try:
            async for frame in connection:
                text = frame if isinstance(frame, str) else frame.decode()
                self.received[ident].append(text)
                await self._answer(ident, connection, text)
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(ident) is connection:
                del self.connections[ident]

    async def _answer(self, ident: str, connection: ServerConnection, text: str) -> None:
        try:
            message = json.loads(text)
            kind, message_id = message[0], message[1]
        except (ValueError, IndexError, KeyError, TypeError):
            await self._send(ident, connection, json.dumps([4, "-1", "FormationViolation", "bad frame", {}]))
            return
        if kind in (3, 4):
            future = self._answers.pop(message_id, None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        action, payload = message[2], message[3]
        result: dict[str, Any] = {}
        if action == "BootNotification":
            result = {"status": "Accepted", "currentTime": _now(), "interval": self.heartbeat_interval}
        elif action == "Heartbeat":
            result = {"currentTime": _now()}
        elif action == "StartTransaction":
            result = {"transactionId": next(self._transactions), "idTagInfo": {"status": "Accepted"}}
        elif action == "Authorize":
            result = {"idTagInfo": {"status": "Accepted"}} if "idTag" in payload else {
                "idTokenInfo": {"status": "Accepted"}}
        await self._send(ident, connection, json.dumps([3, message_id, result], separators=(",", ":")))

    async def _send(self, ident: str, connection: ServerConnection, frame: str) -> None:
        self.sent[ident].append(frame)
        await connection.send(frame)

    async def call(self, ident: str, action: str, payload: dict[str, Any], answer_within: float = 10.0) -> Any:
        """Send a CALL to a charge point and return its answer (the parsed frame)."""
        message_id = f"csms-{next(self._transactions)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[message_id] = future
        await self._send(ident, self.connections[ident], json.dumps([2, message_id, action, payload]))
        return await asyncio.wait_for(future, answer_within)
