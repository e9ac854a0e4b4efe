"""One TOML file decoded into typed, validated settings.

Every problem is reported with its key path, what was expected and what was found, and all
problems are collected before giving up, so a technician fixes the file in one pass.
"""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.driver import DriverSettings
from gateway.errors import ConfigError
from gateway.registry import DRIVER_PACKAGES, UPLINK_MODULES, driver_module, uplink_module
from gateway.uplinks.base import UplinkSettings

__all__ = ["Config", "load_config", "parse_config"]

_KIB = 1024
_MIB = 1024 * 1024


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class GatewaySection(_Section):
    # Identifies this gateway in every batch and MQTT topic.
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    # Outbox database, driver state (frame counters, sessions) and file uplink output.
    state_dir: str = "/var/lib/edge-gateway"


class WindowsSection(_Section):
    # Tumbling window length in seconds; windows align to multiples of it in UTC.
    window: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 60
    # A window closes once the wall clock passes its end plus this many seconds.
    grace: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # A reading for a closed window up to this old (seconds after the window end) revises it;
    # older readings are dropped and counted.
    max_lateness: Annotated[float, msgspec.Meta(ge=0, le=7 * 86400)] = 3600.0
    # Open windows are written to the outbox database this often (seconds); a power cut loses
    # at most this much.
    checkpoint: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 5.0
    # States are sent on change; a keyframe with the current state of every carried series goes
    # out in the first batch after start and then this often (seconds), so a platform that
    # joined late or lost a batch is whole again within one interval.
    keyframe_interval: Annotated[float, msgspec.Meta(ge=60, le=86400)] = 3600.0


class OutboxSection(_Section):
    # Upper bound of stored batch bytes; when full the oldest batches are evicted and counted.
    max_bytes: Annotated[int, msgspec.Meta(ge=64 * _KIB)] = 256 * _MIB
    # Window records per batch at most.
    batch_max_records: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    # Closed windows and events are committed in one transaction at most this often (seconds).
    commit_interval: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 1.0


class HealthSection(_Section):
    # host:port for Prometheus /metrics; "" turns the endpoint off.
    listen: str = "127.0.0.1:9108"


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: readable key=value on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"


class RuntimeSection(_Section):
    # On SIGTERM/SIGINT: drivers stopped, windows checkpointed, outbox committed within this.
    shutdown_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    # Restart backoff of a failed driver or uplink: initial and maximum delay (seconds).
    restart_backoff_initial: Annotated[float, msgspec.Meta(gt=0, le=600)] = 1.0
    restart_backoff_max: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0


class _RawConfig(_Section):
    gateway: GatewaySection
    windows: WindowsSection = msgspec.field(default_factory=WindowsSection)
    outbox: OutboxSection = msgspec.field(default_factory=OutboxSection)
    health: HealthSection = msgspec.field(default_factory=HealthSection)
    log: LogSection = msgspec.field(default_factory=LogSection)
    runtime: RuntimeSection = msgspec.field(default_factory=RuntimeSection)
    drivers: list[dict[str, Any]] = msgspec.field(default_factory=list)
    uplinks: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Config(msgspec.Struct, kw_only=True):
    gateway: GatewaySection
    windows: WindowsSection
    outbox: OutboxSection
    health: HealthSection
    log: LogSection
    runtime: RuntimeSection
    drivers: list[DriverSettings]
    uplinks: list[UplinkSettings]
    source: str = "<embedded>"

    @property
    def state_path(self) -> Path:
        return Path(self.gateway.state_dir)


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    value = raw
    for part in re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", path):
        key, index = part
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, value


def _field_type(root: Any, path: str) -> Any:
    """The annotated type at a msgspec error path (for listing a Literal's choices)."""
    current = root
    for key, index in re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", path):
        if index:
            args = typing.get_args(current)
            current = args[0] if args else None
            continue
        hints = typing.get_type_hints(current, include_extras=True) if isinstance(current, type) else {}
        current = hints.get(key)
        while typing.get_origin(current) is Annotated:
            current = typing.get_args(current)[0]
    return current


def _describe(error: msgspec.ValidationError, raw: Any, prefix: str, root: Any = None) -> str:
    """Turn msgspec's message into `path: expected X, found Y`."""
    text = str(error)
    match = _PATH_RE.search(text)
    path = match.group("path") if match else ""
    message = text[: match.start()] if match else text
    where = (prefix + path).lstrip(".") or "(top level)"
    if (m := _UNKNOWN_RE.match(message)) is not None:
        return f"{where}.{m.group('field')}: unknown key (check the spelling; see config/gateway.example.toml)".lstrip(".")
    if (m := _MISSING_RE.match(message)) is not None:
        return f"{where}.{m.group('field')}: required key is missing".lstrip(".")
    found, value = _lookup(raw, path)
    expected = re.sub(r", got `[^`]*`$", "", message.removeprefix("Expected ").strip())
    if message.startswith("Invalid enum value"):
        choices = typing.get_args(_field_type(root, path)) if root is not None else ()
        expected = "one of " + ", ".join(repr(c) for c in choices) if choices else "a valid choice"
    shown = f"found {value!r}" if found else "found nothing"
    return f"{where}: expected {expected}, {shown}"


def _plugin_config(
    kind: str,
    index: int,
    raw: dict[str, Any],
    registry: dict[str, str],
    loader: Any,
    problems: list[str],
) -> Any:
    where = f"{kind}[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, found {raw!r}")
        return None
    type_name = raw.get("type")
    if type_name not in registry:
        problems.append(
            f"{where}.type: expected one of {', '.join(sorted(registry))}, found {type_name!r}"
        )
        return None
    module = loader(type_name)
    try:
        settings = msgspec.convert(raw, module.Config, strict=True)
    except msgspec.ValidationError as error:
        problems.append(_describe(error, raw, where, module.Config))
        return None
    if not settings.name:
        settings.name = type_name
    validate = getattr(settings, "validate", None)
    if validate is not None:
        problems.extend(f"{where}.{problem}" for problem in validate())
    return settings


def parse_config(raw: dict[str, Any], *, source: str = "<embedded>") -> Config:
    """Validate an already-parsed TOML document; raises ConfigError listing every problem."""
    try:
        top = msgspec.convert(raw, _RawConfig, strict=True)
    except msgspec.ValidationError as error:
        raise ConfigError([_describe(error, raw, "", _RawConfig)]) from None
    problems: list[str] = []
    drivers = [
        _plugin_config("drivers", i, d, DRIVER_PACKAGES, driver_module, problems)
        for i, d in enumerate(top.drivers)
    ]
    uplinks = [
        _plugin_config("uplinks", i, u, UPLINK_MODULES, uplink_module, problems)
        for i, u in enumerate(top.uplinks)
    ]
    for kind, items in (("drivers", drivers), ("uplinks", uplinks)):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item is None:
                continue
            if item.name in seen:
                problems.append(f"{kind}[{i}].name: expected a unique name, found {item.name!r} twice")
            seen.add(item.name)
    if not top.drivers:
        problems.append("drivers: expected at least one [[drivers]] table, found none")
    if top.runtime.restart_backoff_max < top.runtime.restart_backoff_initial:
        problems.append(
            "runtime.restart_backoff_max: expected >= restart_backoff_initial "
            f"({top.runtime.restart_backoff_initial}), found {top.runtime.restart_backoff_max}"
        )
    if top.health.listen and not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}", top.health.listen):
        problems.append(f"health.listen: expected host:port or \"\", found {top.health.listen!r}")
    if problems:
        raise ConfigError(problems)
    if not uplinks:
        from gateway.uplinks.file import Config as FileConfig

        uplinks = [FileConfig(type="file", name="file")]
    return Config(
        gateway=top.gateway,
        windows=top.windows,
        outbox=top.outbox,
        health=top.health,
        log=top.log,
        runtime=top.runtime,
        drivers=[d for d in drivers if d is not None],
        uplinks=[u for u in uplinks if u is not None],
        source=source,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; raises ConfigError naming the file on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read ({error.strerror or error})"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML ({error})"]) from None
    return parse_config(raw, source=str(path))
