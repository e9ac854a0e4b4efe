"""The `ocpp` driver's config table ([[drivers]] type = "ocpp"), validated when the
config is read; the keys are documented in README.md beside this file."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

import msgspec

from gateway.driver import DriverSettings

__all__ = ["Config"]

Protocol = Literal["ocpp2.0.1", "ocpp1.6"]


class Config(DriverSettings):
    # Address the WebSocket endpoint listens on.
    host: str = "0.0.0.0"
    # TCP port; 0 picks a free one (tests read it back from the driver).
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9000
    # URL path in front of the charge point id: ws://host:port<path_prefix><charge-point-id>.
    path_prefix: Annotated[str, msgspec.Meta(pattern=r"^/([A-Za-z0-9._~-]+/)*$")] = "/"
    # Subprotocols offered, in order of preference (OCPP-J 1.6 section 3.1.2, 2.0.1 Part 4 5.3).
    protocols: Annotated[list[Protocol], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["ocpp2.0.1", "ocpp1.6"]
    )
    # Security profile 2: server certificate and key (PEM files) turn ws into wss. Both or none.
    tls_cert: str = ""
    tls_key: str = ""
    # Security profiles 1 and 2: HTTP Basic password per charge point id (the user name is the
    # id). A charge point listed here is known and must present its password.
    passwords: dict[str, Annotated[str, msgspec.Meta(min_length=8, max_length=40)]] = msgspec.field(
        default_factory=dict
    )
    # OCPP-J 1.6 binary AuthorizationKey per charge point id, as hex (the 1.6 Security
    # Whitepaper's key is 20 bytes = 40 hex digits); the Basic password is these raw bytes.
    authorization_keys: dict[str, Annotated[str, msgspec.Meta(pattern=r"^([0-9A-Fa-f]{2}){8,40}$")]] = (
        msgspec.field(default_factory=dict)
    )
    # Failed logins from one source address within login_failure_window seconds after which it
    # is refused with HTTP 429 until the window ends; 0 turns the limit off.
    max_login_failures: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 10
    login_failure_window: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 60.0
    # Regular expressions (full match) for further charge point ids that may connect; ids that
    # are neither listed in `passwords` nor match are refused with HTTP 404.
    allowed_ids: list[str] = msgspec.field(default_factory=list)
    # true: a charge point matched only by `allowed_ids` (no password configured) is refused.
    require_password: bool = False
    # Heartbeat interval (seconds) the gateway answers in BootNotification (endpoint mode, and
    # in proxy mode while the CSMS is unreachable).
    heartbeat_interval: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 300
    # Every this many seconds, a charge point that sent no StatusNotification (or no meter
    # values) since the last poll gets a TriggerMessage for it; 0 turns polling off.
    poll_interval: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 0.0
    # Seconds to wait for a charge point's answer to a CALL the gateway sends.
    call_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    # Proxy mode: the CSMS URL (ws:// or wss://, ending in "/"); the charge point id is appended.
    # Empty: the gateway is the endpoint itself.
    upstream_url: str = ""
    # CA bundle (PEM) to verify a wss:// upstream; empty uses the system's trust store.
    upstream_ca_file: str = ""
    # Reconnect backoff towards the CSMS (seconds): first delay, doubling up to the maximum,
    # with +-20 % jitter.
    upstream_backoff_initial: Annotated[float, msgspec.Meta(gt=0, le=600)] = 1.0
    upstream_backoff_max: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    # Largest frame accepted from a charge point or the CSMS (bytes).
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 65536
    # WebSocket ping interval (seconds) to detect dead connections; 0 turns pings off.
    ping_interval: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0
    # Frames one charge point may send per second on average, and at once; over that its
    # connection is closed with code 1008 (counter closed_flood). 0 turns the limit off.
    max_frames_per_second: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 50.0
    max_frames_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 500
    # Seconds a client has to complete the TLS and WebSocket opening handshakes (slowloris).
    handshake_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    # TCP connections held at once (handshaking or open); one more is answered HTTP 503 and
    # closed. 0: the process's file descriptor limit (soft RLIMIT_NOFILE) less 128 for the rest
    # of the gateway.
    max_connections: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 0

    def secrets(self) -> dict[str, bytes]:
        """Each protected charge point's Basic password as bytes."""
        secrets = {ident: password.encode() for ident, password in self.passwords.items()}
        secrets.update((ident, bytes.fromhex(key)) for ident, key in self.authorization_keys.items())
        return secrets

    def validate(self) -> list[str]:
        problems: list[str] = []
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append(
                f"tls_key: expected tls_cert and tls_key together, found cert={self.tls_cert!r}"
                f" key={self.tls_key!r}"
            )
        for key in ("tls_cert", "tls_key", "upstream_ca_file"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                problems.append(f"{key}: expected a readable file, found {path!r}")
        for index, pattern in enumerate(self.allowed_ids):
            try:
                re.compile(pattern)
            except re.error as error:
                problems.append(f"allowed_ids[{index}]: expected a regular expression, found {pattern!r} ({error})")
        folded: dict[str, str] = {}
        for key in ("passwords", "authorization_keys"):
            for charge_point in getattr(self, key):
                # identifierString (2.0.1 Part 2) without ':', which a Basic user-id cannot hold
                if not re.fullmatch(r"[A-Za-z0-9*_=.+|@-]{1,48}", charge_point):
                    problems.append(
                        f"{key}: expected charge point ids of 1-48 identifier characters (no ':'),"
                        f" found {charge_point!r}"
                    )
                other = folded.setdefault(charge_point.lower(), charge_point)
                if other is not charge_point:
                    problems.append(
                        f"{key}: expected each charge point id once (ids are case-insensitive),"
                        f" found {other!r} and {charge_point!r}"
                    )
        if not folded and not self.allowed_ids:
            problems.append("allowed_ids: expected at least one pattern or one entry in passwords, found none")
        if self.require_password and not folded:
            problems.append("require_password: expected passwords to be configured, found none")
        if self.upstream_url and not re.fullmatch(r"wss?://[^\s/]+(/[^\s]*)?/", self.upstream_url):
            problems.append(f"upstream_url: expected ws:// or wss:// URL ending in '/', found {self.upstream_url!r}")
        if self.upstream_ca_file and not self.upstream_url.startswith("wss://"):
            problems.append("upstream_ca_file: expected only with a wss:// upstream_url, found it set")
        if self.upstream_backoff_max < self.upstream_backoff_initial:
            problems.append(
                f"upstream_backoff_max: expected >= upstream_backoff_initial ({self.upstream_backoff_initial}),"
                f" found {self.upstream_backoff_max}"
            )
        if len(set(self.protocols)) != len(self.protocols):
            problems.append(f"protocols: expected each protocol once, found {self.protocols!r}")
        if 0 < self.poll_interval < 1:
            problems.append(f"poll_interval: expected 0 (off) or >= 1 second, found {self.poll_interval}")
        return problems
