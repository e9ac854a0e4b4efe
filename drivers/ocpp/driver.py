"""The `ocpp` driver: the WebSocket server, one session per connected charge point."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import resource
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

from drivers.ocpp import Config
from drivers.ocpp.decode import V16, V201
from drivers.ocpp.mirror import Mirror
from drivers.ocpp.proxy import ProxySession
from drivers.ocpp.proxy import poll as proxy_poll
from drivers.ocpp.session import SESSIONS, EndpointSettings
from drivers.ocpp.session import poll as endpoint_poll
from drivers.ocpp.transactions import FLUSH_INTERVAL, TransactionStore
from drivers.ocpp.transport import (
    CLOSE_TOO_BIG,
    Admission,
    LoginThrottle,
    ServerConnection,
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
        self._transactions = TransactionStore(ctx.state_dir)
        self._flush_task: asyncio.Task[None] | None = None
        self._server: Any = None
        self._admission: Admission | None = None
        self._endpoint = EndpointSettings(
            ctx, heartbeat_interval=config.heartbeat_interval, call_timeout=config.call_timeout,
            frame_rate=config.max_frames_per_second, frame_burst=config.max_frames_burst,
        )

    async def run(self) -> None:
        config = self.config
        # open transactions of the previous run: their MeterValues and stops still find a connector
        for ident, (version, transactions) in self._transactions.load().items():
            if ident not in self._mirrors:
                mirror = self._mirrors[ident] = Mirror(self.ctx, ident, version)
                mirror.transactions.update(transactions)
        admission = self._admission = Admission(
            prefix=config.path_prefix,
            passwords=config.secrets(),
            allowed=[re.compile(p) for p in config.allowed_ids],
            require_password=config.require_password,
            on_refused=lambda cause: self.ctx.count(f"refused_{cause}"),
            throttle=LoginThrottle(max_failures=config.max_login_failures, window=config.login_failure_window,
                                   log=self.ctx.log, count=self.ctx.count, clock=time.monotonic),
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
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(self._accept_errors(previous, {s.fileno() for s in sockets}))
        self.listening.set()
        self._flush_task = asyncio.create_task(self._flush_periodically())
        self.ctx.log.info("endpoint_listening", port=self.port,
                          mode="proxy" if config.upstream_url else "endpoint")
        try:
            await self._server.serve_forever()
        finally:
            loop.set_exception_handler(previous)
            await self.close()

    def _accept_errors(self, previous: Any, listening: set[int]) -> Any:
        """A loop exception handler that takes asyncio's accept() failures on this endpoint's
        sockets (EMFILE, ENFILE, ENOBUFS: asyncio reports each one and retries a second later)
        and counts them, logging once per errno; everything else goes to the previous handler.
        Issue 17: descriptor exhaustion wrote 457,353 tracebacks in two minutes."""
        logged: set[str] = set()

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            sock, error = context.get("socket"), context.get("exception")
            if sock is not None and isinstance(error, OSError) and sock.fileno() in listening:
                cause = errno.errorcode.get(error.errno or 0, str(error.errno))
                self.ctx.count("accept_errors")
                if cause not in logged:
                    logged.add(cause)
                    self.ctx.log.warning("accept_failed", cause=cause, error=str(error),
                                         note="cannot accept charge point connections; logged once per "
                                              "cause, counted in accept_errors")
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        return handle

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.listening.clear()
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
            self._flush_task = None
        await self._persist_transactions()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._persist_transactions()

    async def _persist_transactions(self) -> None:
        """Write the transaction maps if one changed. A disk that refuses the write is counted
        and logged once; the maps stay marked and are written at the next flush."""
        changed = [m for m in self._mirrors.values() if m.changed]
        if not changed:
            return
        for mirror in changed:
            mirror.changed = False
        data = TransactionStore.encode({i: (m.version, m.transactions) for i, m in self._mirrors.items()})
        try:
            await asyncio.to_thread(self._transactions.write, data)
        except OSError as error:
            for mirror in changed:
                mirror.changed = True
            self.ctx.state_write_failed(self._transactions.path, error)

    async def _serve_charge_point(self, connection: ServerConnection) -> None:
        ctx = self.ctx
        protocol = connection.subprotocol or ""
        request, response = connection.request, connection.response
        admission = self._admission
        ident = admission.identity(request.path) if request and admission else None
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
        # Registered before the old one's close handshake is awaited: a third connection arriving
        # meanwhile then replaces this one, instead of closing the first again and leaving this
        # one open beside it (two sessions of one charge point, every reading twice).
        previous = self.connected.get(ident)
        self.connected[ident] = connection
        if previous is not None:
            ctx.count("replaced_connections")
            await previous.close(1000, "replaced by a new connection")
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
                    ctx.log.warning("session_failed", charge_point=ident,
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
