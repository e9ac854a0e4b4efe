"""WebSocket I/O: the listening endpoint with its admission rules, and the upstream client.

Admission (OCPP-J 1.6 section 3.1, 2.0.1 Part 4 section 3, OCPP 1.6 Security Whitepaper and
2.0.1 Part 2 A00 "Security profiles"):
- the charge point id is the last path segment after `path_prefix` (percent-decoded);
- an id neither configured with a password nor matching `allowed_ids` gets HTTP 404;
- a configured password is checked with HTTP Basic (user name = charge point id); a missing or
  wrong one gets HTTP 401 (profile 1 over ws, profile 2 over wss);
- the subprotocol is negotiated by websockets from `protocols`; a client offering none of them
  gets HTTP 400.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State

__all__ = [
    "Admission",
    "ClientConnection",
    "ServerConnection",
    "CLOSE_FLOOD",
    "CLOSE_TOO_BIG",
    "FrameBudget",
    "IDENTITY",
    "LoginThrottle",
    "charge_point_id",
    "close_code_sent",
    "close_misbehaving",
    "open_upstream",
    "server_ssl_context",
    "start_server",
]


# The charge point identity: OCPP 2.0.1 Part 2 "Primitive datatypes", identifierString (a-z,
# A-Z, 0-9 and * - _ = : + | @ .), at most 48 characters (Part 4 section 3.1.1; OCPP-J 1.6
# section 3.1.1 takes the same rule through the 1.6 Security Whitepaper). Checked after
# percent-decoding, so no spelling (an encoded space, a Unicode look-alike such as U+2010, a
# control character) can reach the password lookup.
IDENTITY = re.compile(r"[A-Za-z0-9*\-_=:+|@.]{1,48}")


def charge_point_id(path: str, prefix: str) -> str | None:
    """The id from `<prefix><id>` (query string ignored), or None if the path has another shape
    or the id is not an identifierString."""
    path = path.split("?", 1)[0]
    if not path.startswith(prefix):
        return None
    raw = path[len(prefix):]
    if not raw or "/" in raw:
        return None
    try:
        ident = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    return ident if IDENTITY.fullmatch(ident) else None


def _basic_credentials(headers: Headers) -> tuple[bytes, bytes] | None:
    """(user, password) as raw bytes (RFC 7617 section 2): the OCPP-J 1.6 AuthorizationKey is 20
    arbitrary bytes, so the password is never decoded as text."""
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except binascii.Error:
        return None
    user, sep, password = decoded.partition(b":")  # a user-id contains no colon (RFC 7617)
    return (user, password) if sep else None


class LoginThrottle:
    """Failed logins per source address: counted, logged once per source, and rate-limited.

    A source with `max_failures` failures inside `window` seconds is refused (HTTP 429) without
    a password check until its window ends. Sources are remembered up to `max_sources` (the
    oldest forgotten first), so spoofed floods cannot grow memory.
    """

    def __init__(self, *, max_failures: int, window: float, log: Any, count: Callable[[str], None],
                 clock: Callable[[], float], max_sources: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window = window
        self.log = log
        self.count = count
        self.clock = clock
        self.max_sources = max_sources
        self.sources: dict[str, list[float]] = {}  # source -> [window start, failures, blocked logged]

    def blocked(self, source: str) -> bool:
        entry = self.sources.get(source)
        if entry is None or not self.max_failures:
            return False
        if self.clock() - entry[0] >= self.window:
            del self.sources[source]
            return False
        return entry[1] >= self.max_failures

    def failed(self, source: str, charge_point: str) -> None:
        now = self.clock()
        entry = self.sources.get(source)
        if entry is None or now - entry[0] >= self.window:
            first_ever = entry is None
            if len(self.sources) >= self.max_sources:
                self.sources.pop(next(iter(self.sources)))
            entry = self.sources[source] = [now, 0.0, 0.0]
            if first_ever:
                self.log.warning("login_failed", source=source, charge_point=charge_point,
                                 note="logged once per source, counted in refused_bad_password")
        entry[1] += 1
        if self.max_failures and entry[1] >= self.max_failures and not entry[2]:
            entry[2] = 1.0
            self.log.warning("login_source_blocked", source=source, failures=int(entry[1]),
                             seconds=self.window)


@dataclass
class Admission:
    """Decides from the opening handshake whether a charge point may connect.

    `passwords` holds each protected id's password as bytes (a text password's UTF-8, or the
    1.6 binary AuthorizationKey). identifierString is case-insensitive (2.0.1 Part 2), so an id
    that differs from a protected one only in case is the same charge point: it must present
    that password and is mirrored under the configured spelling.
    """

    prefix: str
    passwords: dict[str, bytes]
    allowed: list[re.Pattern[str]]
    require_password: bool
    on_refused: Callable[[str], None]
    throttle: LoginThrottle | None = None

    def __post_init__(self) -> None:
        self._folded = {ident.lower(): ident for ident in self.passwords}

    def identity(self, path: str) -> str | None:
        """The charge point id a request path names, in its configured spelling."""
        ident = charge_point_id(path, self.prefix)
        if ident is None:
            return None
        return self._folded.get(ident.lower(), ident)

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        ident = self.identity(request.path)
        if ident is None:
            self.on_refused("bad_path")
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
        password = self.passwords.get(ident)
        if password is None:
            if self.require_password or not any(p.fullmatch(ident) for p in self.allowed):
                self.on_refused("unknown_id")
                return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
            return None
        source = str(connection.remote_address[0]) if connection.remote_address else "?"
        throttle = self.throttle
        if throttle is not None and throttle.blocked(source):
            self.on_refused("login_rate")
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "Too many failed logins\n")
        credentials = _basic_credentials(request.headers)
        if (
            credentials is None
            or credentials[0].lower() != ident.lower().encode()
            or not hmac.compare_digest(credentials[1], password)
        ):
            self.on_refused("bad_password")
            if throttle is not None:
                throttle.failed(source, ident)
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
            return response
        return None


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext | None:
    """TLS for security profile 2 (TLS 1.2 or newer, as both specifications require)."""
    if not cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


# Close code websockets sends for a frame over max_size: 1009 "message too big" (RFC 6455
# section 7.4.1).
CLOSE_TOO_BIG = 1009
_SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
    b"Connection: close\r\n\r\nToo many connections\n"
)


# Close code for a charge point over its frame budget: 1008 "policy violation" (RFC 6455
# section 7.4.1).
CLOSE_FLOOD = 1008


class FrameBudget:
    """Token bucket of frames one connection may send: `rate` per second, `burst` at once.

    OCPP-J allows one outstanding CALL per direction (1.6 section 4.1.1, 2.0.1 Part 4 section
    4.1.1), so a conforming charge point sends a few frames per second at most; one that sends
    faster than the budget is closed, and its frames never take the event loop from the others.
    """

    __slots__ = ("rate", "burst", "tokens", "refilled")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.refilled = now

    def take(self, now: float) -> bool:
        tokens = min(self.tokens + (now - self.refilled) * self.rate, self.burst)
        self.refilled = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


async def close_misbehaving(connection: ServerConnection, code: int, reason: str) -> None:
    """Send a close frame and give the client one second to answer it, then drop the TCP
    connection. A flooder's unread frames fill websockets' receive queue, which pauses reading,
    so its close answer may never be read: waiting the full close_timeout would hold the
    connection for nothing."""
    closing = asyncio.ensure_future(connection.close(code, reason))
    await asyncio.wait([closing], timeout=1.0)
    if not closing.done():
        connection.transport.abort()
        closing.cancel()


def close_code_sent(connection: ServerConnection) -> int | None:
    """The close code this side sent (websockets' own 1009 for an oversized frame), if any."""
    sent = connection.protocol.close_sent
    return sent.code if sent is not None else None


def _connection_class(on_event: Callable[[str], None], max_connections: int) -> type[ServerConnection]:
    """A ServerConnection that counts TCP connections from accept on, for two limits:
    - `max_connections` (0: none): one more is answered HTTP 503 and closed at once, before any
      byte is read, so a flood of connections cannot exhaust file descriptors or memory;
    - a connection that closes before its opening handshake completed (slow or silent clients
      are cut by websockets' `open_timeout`) is counted as `handshake_incomplete`.
    """
    live = [0]

    class CountedConnection(ServerConnection):
        refused = False

        def connection_made(self, transport: Any) -> None:
            live[0] += 1
            super().connection_made(transport)
            if max_connections and live[0] > max_connections:
                self.refused = True
                on_event("refused_connection_cap")
                transport.write(_SERVICE_UNAVAILABLE)
                transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            live[0] -= 1
            if not self.refused and self.protocol.state is State.CONNECTING:
                on_event("handshake_incomplete")
            super().connection_lost(exc)

    return CountedConnection


async def start_server(
    handler: Callable[[ServerConnection], Awaitable[None]],
    *,
    host: str,
    port: int,
    protocols: list[str],
    admission: Admission,
    tls: ssl.SSLContext | None,
    max_size: int,
    ping_interval: float,
    handshake_timeout: float = 10.0,
    max_connections: int = 0,
    on_event: Callable[[str], None] = lambda counter: None,
) -> Server:
    return await serve(
        handler,
        host,
        port,
        subprotocols=protocols,  # type: ignore[arg-type]  # websockets wants its Subprotocol NewType; a str is one at run time
        process_request=admission.check,
        ssl=tls,
        max_size=max_size,
        ping_interval=ping_interval or None,
        ping_timeout=ping_interval or None,
        # TLS and WebSocket opening handshakes together must finish within this (slowloris).
        open_timeout=handshake_timeout,
        compression=None,  # charge points rarely negotiate it; saves CPU per frame
        create_connection=_connection_class(on_event, max_connections),
    )


async def open_upstream(
    url: str,
    *,
    protocol: str,
    authorization: str | None,
    ca_file: str,
    max_size: int,
    ping_interval: float,
    open_timeout: float,
) -> ClientConnection:
    """Connect to the CSMS as the charge point would: same id, subprotocol and credentials."""
    headers: dict[str, Any] = {}
    if authorization:
        headers["Authorization"] = authorization
    context: ssl.SSLContext | None = None
    if url.startswith("wss://"):
        context = ssl.create_default_context(cafile=ca_file or None)
    connection = await connect(
        url,
        subprotocols=[protocol],  # type: ignore[list-item]  # websockets wants its Subprotocol NewType; a str is one at run time
        additional_headers=headers,
        ssl=context,
        max_size=max_size,
        ping_interval=ping_interval or None,
        ping_timeout=ping_interval or None,
        open_timeout=open_timeout,
        compression=None,
        user_agent_header=None,
    )
    if connection.subprotocol != protocol:
        await connection.close()
        raise ConnectionError(f"CSMS chose subprotocol {connection.subprotocol!r}, not {protocol!r}")
    return connection
