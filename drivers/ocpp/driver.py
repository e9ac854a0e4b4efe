"""The `ocpp` driver: the WebSocket server, one session per connected charge point."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
from typing import Any

from websockets.exceptions import ConnectionClosed

from drivers.ocpp import Config
from drivers.ocpp.decode import V16, V201
from drivers.ocpp.mirror import Mirror
from drivers.ocpp.proxy import ProxySession
from drivers.ocpp.proxy import poll as proxy_poll
from drivers.ocpp.session import SESSIONS, EndpointSettings
from drivers.ocpp.session import poll as endpoint_poll
from drivers.ocpp.transport import (
    CLOSE_TOO_BIG,
    Admission,
    ServerConnection,
    charge_point_id,
    close_code_sent,
    server_ssl_context,
    start_server,
)
from gateway.driver import Driver, DriverContext
from gateway.errors import DriverError

__all__ = ["OcppDriver"]

_VERSIONS = {"ocpp1.6": V16, "ocpp2.0.1": V201}


def _descriptor_budget() -> int:
    """Connections the endpoint may hold when `max_connections` is 0: the soft descriptor limit
    less 128 for the outbox, uplinks and other drivers (never below 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(16, soft - 128)


class OcppDriver(Driver[Config]):
    type_name = "ocpp"

    def __init__(self, config: Config, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        self.port = 0  # the bound port once listening
        self.listening = asyncio.Event()
        self.connected: dict[str, ServerConnection] = {}
        self._mirrors: dict[str, Mirror] = {}  # bounded by the ids admission lets in
        self._server: Any = None
        self._endpoint = EndpointSettings(
            ctx, heartbeat_interval=config.heartbeat_interval, call_timeout=config.call_timeout,
            frame_rate=config.max_frames_per_second, frame_burst=config.max_frames_burst,
        )

    async def run(self) -> None:
        config = self.config
        admission = Admission(
            prefix=config.path_prefix,
            passwords=dict(config.passwords),
            allowed=[re.compile(p) for p in config.allowed_ids],
            require_password=config.require_password,
            on_refused=lambda cause: self.ctx.count(f"refused_{cause}"),
        )
        try:
            tls = server_ssl_context(config.tls_cert, config.tls_key)
            self._server = await start_server(
                self._serve_charge_point,
                host=config.host,
                port=config.port,
                protocols=list(config.protocols),
                admission=admission,
                tls=tls,
                max_size=config.max_message_bytes,
                ping_interval=config.ping_interval,
                handshake_timeout=config.handshake_timeout,
                max_connections=config.max_connections or _descriptor_budget(),
                on_event=self.ctx.count,
            )
        except OSError as error:
            raise DriverError(f"cannot listen on {config.host}:{config.port}: {error}") from error
        sockets = list(self._server.sockets)
        self.port = sockets[0].getsockname()[1] if sockets else config.port
        self.listening.set()
        self.ctx.log.info("OCPP endpoint listening", port=self.port,
                          mode="proxy" if config.upstream_url else "endpoint")
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.listening.clear()

    async def _serve_charge_point(self, connection: ServerConnection) -> None:
        ctx = self.ctx
        protocol = connection.subprotocol or ""
        request, response = connection.request, connection.response
        ident = charge_point_id(request.path if request else "", self.config.path_prefix)
        authorization = request.headers.get("Authorization") if request else None
        # websockets keeps both handshakes' headers for the life of the connection (~4 KiB);
        # nothing reads them after this point, so they are emptied (issue 12: memory per
        # connected charge point).
        if request is not None:
            request.headers.clear()
        if response is not None:
            response.headers.clear()
        if ident is None or protocol not in _VERSIONS:  # admission and negotiation prevent this
            await connection.close(1002, "unsupported")
            return
        # A charge point that reconnects replaces its old connection (OCPP-J 1.6 section 3.1.1).
        previous = self.connected.get(ident)
        if previous is not None:
            ctx.count("replaced_connections")
            await previous.close(1000, "replaced by a new connection")
        self.connected[ident] = connection
        ctx.count("connections")
        # The mirror outlives a connection: a charge point that reconnects mid-transaction still
        # has its transaction -> connector map and last statuses (no repeated priority events).
        mirror = self._mirrors.get(ident)
        if mirror is None or mirror.version != _VERSIONS[protocol]:
            mirror = self._mirrors[ident] = Mirror(ctx, ident, _VERSIONS[protocol])
        poller: asyncio.Task[None] | None = None
        try:
            if self.config.upstream_url:
                proxy = ProxySession(
                    ctx=ctx, downstream=connection, charge_point=ident, protocol=protocol,
                    authorization=authorization, upstream_url=self.config.upstream_url, mirror=mirror, settings=self.config,
                )
                if self.config.poll_interval:
                    poller = asyncio.ensure_future(proxy_poll(proxy, self.config.poll_interval))
                await proxy.run()
            else:
                session = SESSIONS[protocol](ident, connection, mirror, self._endpoint)
                if self.config.poll_interval:
                    poller = asyncio.ensure_future(endpoint_poll(session, self.config.poll_interval))
                try:
                    await session.run()
                except ConnectionClosed:
                    pass  # the normal end of a session
                except Exception as error:  # one charge point's failure never ends the others
                    ctx.count("session_errors")
                    ctx.log.warning("charge point session failed", charge_point=ident,
                                    error=f"{type(error).__name__}: {error}"[:200])
        finally:
            if poller is not None:
                poller.cancel()
            if self.connected.get(ident) is connection:
                del self.connected[ident]
            ctx.count("disconnections")
            if close_code_sent(connection) == CLOSE_TOO_BIG:  # websockets refused a frame
                ctx.count("closed_message_too_big")
                ctx.decode_error("frame_too_big", f"over {self.config.max_message_bytes} bytes",
                                 charge_point=ident)
