"""Secrets in the config come from the environment, a file or a systemd credential.

A technician should not have to write LoRaWAN keys, bind keys and passwords into the one TOML
file that every backup, ticket attachment and `cat` shows. Every key listed in `SECRET_KEYS`
therefore accepts, instead of the secret itself, a reference to where it is kept:

    env:NAME          the environment variable NAME (e.g. from an EnvironmentFile=)
    file:/abs/path    the contents of that file (one trailing newline is dropped)
    credential:NAME   $CREDENTIALS_DIRECTORY/NAME: a systemd credential (LoadCredential=,
                      LoadCredentialEncrypted=), readable only by the service

A secret that itself begins with one of these prefixes is written to a file and referenced with
`file:`. The references are resolved once, when the config is parsed, before validation, so a
key from a file is checked like one written in place; and every problem message passes through
`Resolved.redact`, so `check-config` never prints a secret's value, not even a malformed one.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

__all__ = ["SECRET_KEYS", "Resolved", "resolve_secrets"]

# Where secrets sit in the config: (section, plugin type, key path inside the plugin's table).
# "*" stands for every key of a table or every element of an array. A new secret key is a new row.
SECRET_KEYS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("uplinks", "mqtt", ("password",)),
    ("uplinks", "influxdb", ("token",)),
    ("drivers", "lorawan", ("mqtt_password",)),
    ("drivers", "lorawan", ("devices", "*", "nwk_skey")),
    ("drivers", "lorawan", ("devices", "*", "app_skey")),
    ("drivers", "lorawan", ("devices", "*", "app_key")),
    ("drivers", "ble", ("bthome_keys", "*")),
    ("drivers", "ocpp", ("passwords", "*")),
    ("drivers", "ocpp", ("authorization_keys", "*")),
)

# A secret file is a key or a password, never a document: a larger file is a wrong path.
MAX_SECRET_BYTES = 64 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.@-]+")  # a file name, as systemd accepts it
# Values shorter than this are not searched for in messages: they would blank out ordinary words.
_MIN_REDACTED = 4
REDACTED = "<secret>"


class Resolved:
    """The config document with every reference replaced by its secret, and the secrets' values
    (literal and resolved) so that messages can be scrubbed of them."""

    __slots__ = ("document", "values")

    def __init__(self, document: dict[str, Any], values: set[str]) -> None:
        self.document = document
        self.values = values

    def redact(self, problems: list[str]) -> list[str]:
        """The problems with every secret value (and its repr() escaping) replaced."""
        needles: set[str] = set()
        for value in self.values:
            if len(value) >= _MIN_REDACTED:
                needles.add(value)
                needles.add(repr(value)[1:-1])
        ordered = sorted(needles, key=len, reverse=True)
        cleaned = []
        for problem in problems:
            for needle in ordered:
                problem = problem.replace(needle, REDACTED)
            cleaned.append(problem)
        return cleaned


def _read_secret_file(path: Path, what: str) -> str:
    """A secret file's text; raises ValueError with a message that never holds its contents."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as error:
        raise ValueError(f"{what}: cannot read {path} ({error.strerror or error})") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"{what}: {path} is larger than {MAX_SECRET_BYTES} bytes (not a secret?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what}: {path} is not UTF-8 text") from None
    # `echo secret > file` and systemd-creds both leave a newline that is not part of the secret.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"{what}: {path} is empty")
    return text


def resolve_reference(value: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """The secret a reference points to, or the value itself when it is no reference.

    Raises ValueError naming the reference (never the secret) when it cannot be resolved."""
    scheme, sep, rest = value.partition(":")
    if not sep or scheme not in ("env", "file", "credential"):
        return value
    if scheme == "env":
        if not _ENV_NAME.fullmatch(rest):
            raise ValueError("expected env:NAME with a variable name after env:")
        if rest not in environ:
            raise ValueError(f"environment variable {rest} is not set")
        if not environ[rest]:
            raise ValueError(f"environment variable {rest} is empty")
        return environ[rest]
    if scheme == "file":
        path = Path(rest)
        if not path.is_absolute():
            raise ValueError("expected an absolute path after file:")
        return _read_secret_file(path, value)
    if not _CREDENTIAL_NAME.fullmatch(rest) or rest in (".", ".."):
        raise ValueError("expected credential:NAME with a file name after credential:")
    directory = environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        raise ValueError(
            f"{value}: $CREDENTIALS_DIRECTORY is not set (systemd sets it for a unit with "
            f"LoadCredential={rest}:...; outside the service, use file: or env:)"
        )
    return _read_secret_file(Path(directory) / rest, value)


def _slots(table: Any, path: tuple[str, ...], where: str) -> list[tuple[Any, Any, str]]:
    """(container, key, key path) of every place in `table` that `path` names and that holds a
    string; shapes that do not fit are left to validation to report."""
    if not path:
        return []
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(table, dict):
            keys: list[Any] = list(table)
            names = [f"{where}.{k}" for k in keys]
        elif isinstance(table, list):
            keys = list(range(len(table)))
            names = [f"{where}[{k}]" for k in keys]
        else:
            return []
    elif isinstance(table, dict) and head in table:
        keys, names = [head], [f"{where}.{head}"]
    else:
        return []
    found: list[tuple[Any, Any, str]] = []
    for key, name in zip(keys, names, strict=True):
        if rest:
            found.extend(_slots(table[key], rest, name))
        elif isinstance(table[key], str):
            found.append((table, key, name))
    return found


def resolve_secrets(
    raw: dict[str, Any], environ: dict[str, str] | os._Environ[str] | None = None
) -> Resolved:
    """Resolve every secret reference in a parsed config (the input is left unchanged).

    Raises ConfigError listing every reference that cannot be resolved, by key path."""
    environ = os.environ if environ is None else environ
    document = copy.deepcopy(raw)
    values: set[str] = set()
    problems: list[str] = []
    for section, plugin_type, path in SECRET_KEYS:
        tables = document.get(section)
        if not isinstance(tables, list):
            continue
        for index, table in enumerate(tables):
            if not isinstance(table, dict) or table.get("type") != plugin_type:
                continue
            for container, key, where in _slots(table, path, f"{section}[{index}]"):
                reference = container[key]
                try:
                    secret = resolve_reference(reference, environ)
                except ValueError as error:
                    problems.append(f"{where}: {error}")
                    continue
                container[key] = secret
                values.add(secret)
    if problems:
        raise ConfigError(problems)
    return Resolved(document, values)
