"""What a valid config needs from this box: devices, files, a writable state dir, free ports.

`check-config` runs these after the config itself validated, so a technician at the cabinet
learns in one run that the USB adapter is missing or the CA file path has a typo, instead of
finding out from a retry loop in the journal. Something that can come right by itself (a serial
adapter plugged in later, a port held by the gateway that already runs) is a warning; something
that cannot (a missing certificate, an unwritable state dir) is an error. Nothing here creates
or changes anything beyond a probe directory it removes at once.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.config import Config

__all__ = ["Finding", "check_host"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def _readable_file(path: str) -> str | None:
    if not os.path.exists(path):
        return f"{path} does not exist"
    if not os.path.isfile(path):
        return f"{path} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user"
    return None


def _check_device(key: str, path: str, _: Any) -> list[Finding]:
    if not os.path.exists(path):
        return [Finding("warning", key, f"{path} does not exist (adapter unplugged? the driver "
                                        "keeps trying to open it)")]
    if not stat.S_ISCHR(os.stat(path).st_mode):
        return [Finding("warning", key, f"{path} is not a character device")]
    if not os.access(path, os.R_OK | os.W_OK):
        return [Finding("error", key, f"{path} is not readable and writable by this user "
                                      "(add the service user to group dialout)")]
    return []


def _check_data_file(key: str, path: str, _: Any) -> list[Finding]:
    if not os.path.exists(path):
        # a logger's upload may arrive later: the driver is restarted with backoff until it does
        return [Finding("warning", key, f"{path} does not exist yet (the driver retries until it appears)")]
    problem = _readable_file(path)
    return [Finding("error", key, problem)] if problem else []


def _check_ca(key: str, path: str, _: Any) -> list[Finding]:
    if problem := _readable_file(path):
        return [Finding("error", key, problem)]
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError, OSError) as error:
        return [Finding("error", key, f"{path} holds no PEM certificate ({_reason(error)})")]
    return []


def _check_cert(key: str, path: str, settings: Any) -> list[Finding]:
    """A certificate with its key (`*_key`/`key_file` next to it): both load as a pair."""
    if problem := _readable_file(path):
        return [Finding("error", key, problem)]
    key_path = getattr(settings, "key_file", "") or getattr(settings, "tls_key", "")
    if not key_path or _readable_file(key_path):
        return []  # the key's own check reports it
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(path, key_path)
    except (ssl.SSLError, OSError) as error:
        return [Finding("error", key, f"{path} with key {key_path} does not load as a "
                                      f"certificate and its private key ({_reason(error)})")]
    return []


def _check_key(key: str, path: str, _: Any) -> list[Finding]:
    problem = _readable_file(path)
    return [Finding("error", key, problem)] if problem else []


def _reason(error: BaseException) -> str:
    return getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)


# (plugin type, key) -> what the value must be on this box. A new file-valued key is a new row.
PathCheck = Callable[[str, str, Any], list[Finding]]
PATH_KEYS: dict[tuple[str, str], PathCheck] = {
    ("serial", "port"): _check_device,
    ("replay", "path"): _check_data_file,
    ("mqtt", "ca_file"): _check_ca,
    ("mqtt", "cert_file"): _check_cert,
    ("mqtt", "key_file"): _check_key,
    ("influxdb", "ca_file"): _check_ca,
    ("ocpp", "tls_cert"): _check_cert,
    ("ocpp", "tls_key"): _check_key,
    ("ocpp", "upstream_ca_file"): _check_ca,
}


def _check_state_dir(path: Path) -> list[Finding]:
    key = "gateway.state_dir"
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return [Finding("error", key, f"{existing} is not a directory, so {path} cannot be used")]
    try:  # a real probe: os.access says yes to root even on /proc
        probe = tempfile.mkdtemp(prefix=".check-config-", dir=existing)
        os.rmdir(probe)
    except OSError as error:
        where = "" if existing == path else f" (its nearest existing parent {existing})"
        return [Finding("error", key, f"{path}{where} is not writable: {_reason(error)}")]
    return []


def _check_listen(key: str, value: str, kind: int) -> list[Finding]:
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return [Finding("error", key, f"cannot resolve {host!r} ({error.strerror})")]
    family, _, _, _, address = infos[0]
    probe = socket.socket(family, kind)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return [Finding("warning", key, f"port {port} is in use (the gateway already "
                                            "running, or another program)")]
        if error.errno == errno.EADDRNOTAVAIL:
            return [Finding("error", key, f"{host} is not an address of this box")]
        if error.errno == errno.EACCES:
            return [Finding("error", key, f"port {port} needs privileges this user lacks "
                                          "(use a port above 1023)")]
        return [Finding("error", key, f"cannot listen on {value} ({_reason(error)})")]
    finally:
        probe.close()
    return []


def check_host(config: Config) -> list[Finding]:
    """Everything the config refers to on this box, checked without starting anything."""
    findings = _check_state_dir(config.state_path)
    if config.health.listen:
        findings += _check_listen("health.listen", config.health.listen, socket.SOCK_STREAM)
        host = config.health.listen.rpartition(":")[0].strip("[]")
        if host not in ("127.0.0.1", "::1", "localhost"):
            findings.append(Finding("warning", "health.listen", f"{host} is reachable from the "
                                    "network: the status page and metrics are not protected"))
    tables: list[tuple[str, list[Any]]] = [("drivers", config.drivers), ("uplinks", config.uplinks)]
    for kind, items in tables:
        for index, settings in enumerate(items):
            where = f"{kind}[{index}]"
            for (type_name, key), check in PATH_KEYS.items():
                value = getattr(settings, key, "") if settings.type == type_name else ""
                if value:
                    findings += check(f"{where}.{key}", value, settings)
            findings += _plugin_listeners(where, settings)
    return findings


def _plugin_listeners(where: str, settings: Any) -> list[Finding]:
    if settings.type == "lorawan" and settings.mode == "concentrator":
        return _check_listen(f"{where}.listen", settings.listen, socket.SOCK_DGRAM)
    if settings.type == "ocpp" and settings.port:
        return _check_listen(f"{where}.port", f"{settings.host}:{settings.port}", socket.SOCK_STREAM)
    return []
