"""TLS client contexts for MQTT connections, with errors that name the file at fault.

`ssl.SSLContext.load_verify_locations` and `load_cert_chain` raise `FileNotFoundError`,
`PermissionError` or `ssl.SSLError("[X509] PEM lib")` without saying which of the files they
were given is the problem. A gateway operator needs the path: each file is loaded on its own
here and the error says which one and why. A missing or unreadable file is a configuration
problem, not a link problem: callers must not retry it as if it were transient.
"""

from __future__ import annotations

import os
import ssl
from typing import ClassVar

from gateway.errors import GatewayError

__all__ = ["TlsFileError", "tls_context"]


class TlsFileError(GatewayError):
    """A CA, certificate or key file that cannot be used: `key` names the config key, `path`
    the file, `problem` what is wrong with it; `reason` is the whole sentence.

    `permanent`: retrying does not mend a missing, unreadable or malformed file, so the uplink
    runner stops the uplink rather than retrying it as if the link were down."""

    permanent: ClassVar[bool] = True

    def __init__(self, key: str, path: str, problem: str) -> None:
        self.key = key
        self.path = path
        self.problem = problem
        self.reason = f"{key} {path!r}: {problem}"
        super().__init__(self.reason)


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise TlsFileError(key, path, "no such file") from None
    except PermissionError:
        raise TlsFileError(key, path, f"permission denied (running as uid {os.getuid()})") from None
    except IsADirectoryError:
        raise TlsFileError(key, path, "is a directory") from None
    except OSError as error:
        raise TlsFileError(key, path, error.strerror or str(error)) from None


def tls_context(*, ca_file: str = "", cert_file: str = "", key_file: str = "",
                insecure: bool = False, keys: tuple[str, str, str] = ("ca_file", "cert_file",
                                                                      "key_file")) -> ssl.SSLContext:
    """A client context verifying the server against `ca_file` ("" = the system store), with a
    client certificate when `cert_file` and `key_file` are given. `insecure` skips only the host
    name check (the chain is still verified). `keys` are the config key names used in errors."""
    ca_key, cert_key, key_key = keys
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        _readable(ca_key, ca_file)
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as error:
            raise TlsFileError(ca_key, ca_file, f"not a PEM CA bundle ({error.reason or error})") from None
    if cert_file or key_file:
        _readable(cert_key, cert_file)
        _readable(key_key, key_file)
        try:
            context.load_cert_chain(certfile=cert_file, keyfile=key_file)
        except ssl.SSLError as error:
            reason = error.reason or str(error)
            if "KEY_VALUES_MISMATCH" in reason.upper():
                raise TlsFileError(key_key, key_file, f"does not match {cert_key} {cert_file!r}") from None
            raise TlsFileError(cert_key, cert_file,
                               f"{cert_key}/{key_key} not a PEM certificate and key ({reason})") from None
    if insecure:
        context.check_hostname = False
    return context
