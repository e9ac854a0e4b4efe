"""One TOML file decoded into typed, validated settings.

Every problem is reported with its key path, what was expected and what was found, and all
problems are collected before giving up, so a technician fixes the file in one pass.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.driver import DriverSettings
from gateway.errors import ConfigError
from gateway.model import (
    FORWARDED_NAME,
    MAX_EXTRA_METRICS,
    MAX_NAME_LENGTH,
    Kind,
    configure_metrics,
)
from gateway.registry import DRIVER_PACKAGES, UPLINK_MODULES, driver_module, uplink_module
from gateway.secrets import resolve_secrets
from gateway.uplinks.base import UplinkSettings
from gateway.validation import check_table, describe_error, is_secret_key

__all__ = ["Config", "HealthSection", "RemoteConfigSection", "listen_problem", "load_config", "parse_config",
           "read_config_table"]

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


class RemoteConfigSection(_Section):
    # Take new configs from the platform over the MQTT uplink's broker
    # (<topic_prefix>/<gateway id>/config, retained); off by default. docs: gateway/remote_config.py
    enabled: bool = False
    # The MQTT uplink (by name) whose broker carries the config; "" picks the first MQTT uplink.
    uplink: str = ""
    # Ed25519 public key (PEM, "-----BEGIN PUBLIC KEY-----") that checks the envelope's signature.
    public_key_file: str = ""
    # Refuse a config without a valid signature (needs public_key_file).
    require_signature: bool = True
    # A remote config is kept only if, within this many seconds, every driver that delivered
    # readings before delivers again and every uplink acknowledges; else the last good one returns.
    health_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 120.0


class MetricSection(_Section):
    # Unit of a measurement outside the catalog, a SenML symbol where one exists ("Cel", "%RH",
    # "ppm", "ug/m3", "V", "W", "Wh", "/" for a plain number); printable ASCII, no spaces.
    unit: str
    # How windows aggregate it: gauge (min/max/mean/last), counter (delta of a register) or
    # state (text values: last, transitions, seconds per state).
    kind: Literal["gauge", "counter", "state"] = "gauge"


_UNIT = re.compile(r"[!-~]{1,16}")
_KINDS: dict[str, Kind] = {"gauge": Kind.GAUGE, "counter": Kind.COUNTER, "state": Kind.STATE}


def _metric_sections(raw: dict[str, Any], problems: list[str]) -> dict[str, MetricSection]:
    """`[metrics.<name>]` tables, each checked on its own so every message names its table.
    Names take the forwarded-name form (docs/metrics.md), which no catalog name has, so a
    configured row never shadows a catalog one."""
    if len(raw) > MAX_EXTRA_METRICS:
        problems.append(f"metrics: expected at most {MAX_EXTRA_METRICS} entries, found {len(raw)}")
    sections: dict[str, MetricSection] = {}
    for name, table in raw.items():
        where = f"metrics.{name}"
        if len(name) > MAX_NAME_LENGTH or not FORWARDED_NAME.fullmatch(name):
            problems.append(
                f"{where}: expected a name like x_<lower_case_words> (x_ then a-z, 0-9 and single "
                f"underscores, at most {MAX_NAME_LENGTH} characters), found {name!r}"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table with unit and kind, found {table!r}")
            continue
        try:
            section = msgspec.convert(table, MetricSection, strict=True)
        except msgspec.ValidationError as error:
            problems.append(describe_error(error, table, where, MetricSection))
            continue
        if not _UNIT.fullmatch(section.unit):
            problems.append(
                f"{where}.unit: expected a unit symbol, 1 to 16 printable ASCII characters without "
                f"spaces (SenML where one exists: \"Cel\", \"ug/m3\", \"/\"), found {section.unit!r}"
            )
            continue
        sections[name] = section
    return sections


class _RawConfig(_Section):
    gateway: GatewaySection
    windows: WindowsSection = msgspec.field(default_factory=WindowsSection)
    outbox: OutboxSection = msgspec.field(default_factory=OutboxSection)
    health: HealthSection = msgspec.field(default_factory=HealthSection)
    log: LogSection = msgspec.field(default_factory=LogSection)
    runtime: RuntimeSection = msgspec.field(default_factory=RuntimeSection)
    remote_config: RemoteConfigSection = msgspec.field(default_factory=RemoteConfigSection)
    drivers: list[dict[str, Any]] = msgspec.field(default_factory=list)
    uplinks: list[dict[str, Any]] = msgspec.field(default_factory=list)
    # Measurements outside the catalog: [metrics.x_<name>] unit = "...", kind = "...".
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)


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
    metrics: dict[str, MetricSection] = msgspec.field(default_factory=dict)
    remote_config: RemoteConfigSection = msgspec.field(default_factory=RemoteConfigSection)

    @property
    def state_path(self) -> Path:
        return Path(self.gateway.state_dir)


_LISTEN_RE = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


def listen_problem(key: str, value: str) -> str | None:
    """`host:port` with a port in 0-65535 (0 picks a free one), else the message saying why."""
    match = _LISTEN_RE.fullmatch(value)
    if match is None:
        return f"{key}: expected host:port (e.g. 127.0.0.1:9108) or \"\", found {value!r}"
    if int(match.group("port")) > 65535:
        return f"{key}: expected a port from 0 to 65535, found {int(match.group('port'))}"
    return None


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
    before = len(problems)
    check_table(raw, module.Config, where, problems)
    listen = raw.get("listen")
    if isinstance(listen, str) and listen and (problem := listen_problem(f"{where}.listen", listen)):
        problems.append(problem)
    if len(problems) > before:
        return None
    try:
        settings = msgspec.convert(raw, module.Config, strict=True)
    except msgspec.ValidationError as error:
        problems.append(describe_error(error, raw, where, module.Config))
        return None
    if not settings.name:
        settings.name = type_name
    validate = getattr(settings, "validate", None)
    if validate is not None:
        problems.extend(f"{where}.{problem}" for problem in validate())
    return settings


def _secrets(raw: Any, secret: bool = False) -> set[str]:
    """Every string under a secret-looking key, to scrub from messages as a last guard."""
    if isinstance(raw, dict):
        return set().union(*(_secrets(v, secret or is_secret_key(str(k))) for k, v in raw.items()))
    if isinstance(raw, list):
        return set().union(*(_secrets(v, secret) for v in raw))
    return {raw} if secret and isinstance(raw, str) and len(raw) >= 4 else set()


def _scrub(problems: list[str], raw: Any) -> list[str]:
    secrets = sorted(_secrets(raw), key=len, reverse=True)
    for secret in secrets:
        problems = [p.replace(secret, "(hidden)") for p in problems]
    return problems


def parse_config(raw: dict[str, Any], *, source: str = "<embedded>") -> Config:
    """Validate an already-parsed TOML document; raises ConfigError listing every problem.

    Secret references (env:, file:, credential:) are resolved first (gateway/secrets.py), and
    no problem message carries a secret's value."""
    resolved = resolve_secrets(raw)
    try:
        return _validate(resolved.document, source)
    except ConfigError as error:
        raise ConfigError(resolved.redact(error.problems)) from None


def _validate(raw: dict[str, Any], source: str) -> Config:
    problems: list[str] = []
    check_table(raw, _RawConfig, "", problems)
    top: _RawConfig | None = None
    if not problems:
        try:
            top = msgspec.convert(raw, _RawConfig, strict=True)
        except msgspec.ValidationError as error:
            problems.append(describe_error(error, raw, "", _RawConfig))
    metrics = _metric_sections(top.metrics, problems) if top is not None else {}
    raw_drivers = raw.get("drivers") if isinstance(raw.get("drivers"), list) else []
    raw_uplinks = raw.get("uplinks") if isinstance(raw.get("uplinks"), list) else []
    drivers = [
        _plugin_config("drivers", i, d, DRIVER_PACKAGES, driver_module, problems)
        for i, d in enumerate(raw_drivers or [])
    ]
    uplinks = [
        _plugin_config("uplinks", i, u, UPLINK_MODULES, uplink_module, problems)
        for i, u in enumerate(raw_uplinks or [])
    ]
    for kind, items in (("drivers", drivers), ("uplinks", uplinks)):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item is None:
                continue
            if item.name in seen:
                problems.append(f"{kind}[{i}].name: expected a unique name, found {item.name!r} twice")
            seen.add(item.name)
    if not raw_drivers:
        problems.append("drivers: expected at least one [[drivers]] table, found none")
    listen = raw.get("health", {}).get("listen") if isinstance(raw.get("health"), dict) else None
    if isinstance(listen, str) and listen and (problem := listen_problem("health.listen", listen)):
        problems.append(problem)
    if top is not None:
        problems.extend(_cross_checks(top))
        problems.extend(_remote_config_checks(top.remote_config, uplinks))
    if problems or top is None:
        raise ConfigError(_scrub(problems, raw))
    # the process's configured metrics are this config's (windows and uplinks look units up)
    configure_metrics({name: (row.unit, _KINDS[row.kind]) for name, row in metrics.items()})
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
        metrics=metrics,
        remote_config=top.remote_config,
    )


# A full batch's stored bytes per window record, at most (gzip v2 rows measured 5-40 bytes;
# this leaves room for long device ids and little compression).
RECORD_BYTES_BOUND = 64
# Ticks' worth of full batches the outbox must hold beside the one being written, so a healthy
# link never sees batches evicted in the commits right after the one that wrote them.
TICKS_HELD = 4


def needed_outbox_bytes(batch_max_records: int) -> int:
    return TICKS_HELD * batch_max_records * RECORD_BYTES_BOUND


def _cross_checks(top: _RawConfig) -> list[str]:
    """Rules that span keys of the gateway's own sections."""
    problems: list[str] = []
    needed = needed_outbox_bytes(top.outbox.batch_max_records)
    if top.outbox.max_bytes < needed:
        problems.append(
            f"outbox.max_bytes: expected at least {needed:,} bytes ({TICKS_HELD} ticks of full batches of "
            f"{top.outbox.batch_max_records} records at up to {RECORD_BYTES_BOUND} bytes each), "
            f"found {top.outbox.max_bytes:,}"
        )
    if top.runtime.restart_backoff_max < top.runtime.restart_backoff_initial:
        problems.append(
            "runtime.restart_backoff_max: expected >= restart_backoff_initial "
            f"({top.runtime.restart_backoff_initial}), found {top.runtime.restart_backoff_max}"
        )
    return problems


def _remote_config_checks(section: RemoteConfigSection, uplinks: list[Any]) -> list[str]:
    """[remote_config] needs an MQTT uplink to listen on and, when signing is required, a
    readable Ed25519 public key (read here so a bad key stops start-up, not the first push)."""
    if not section.enabled:
        return []
    problems: list[str] = []
    mqtt = [u.name for u in uplinks if u is not None and u.type == "mqtt"]
    if section.uplink and section.uplink not in mqtt:
        problems.append(
            f"remote_config.uplink: expected the name of an MQTT uplink ({', '.join(mqtt) or 'none'}), "
            f"found {section.uplink!r}"
        )
    elif not mqtt:
        problems.append("remote_config.enabled: expected an [[uplinks]] table of type \"mqtt\" to "
                        "receive configs over, found none")
    if section.require_signature and not section.public_key_file:
        problems.append("remote_config.public_key_file: expected an Ed25519 public key file when "
                        "require_signature = true, found \"\"")
    if section.public_key_file:
        from gateway.remote_config import load_public_key

        problem = load_public_key(section.public_key_file)[1]
        if problem:
            problems.append(f"remote_config.public_key_file: {problem}")
    return problems


# The same bound as a reload or a remote config (gateway/reload.py MAX_CONFIG_BYTES).
MAX_CONFIG_FILE_BYTES = 1024 * 1024


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; raises ConfigError naming the file on any problem."""
    return parse_config(read_config_table(path), source=str(path))


def read_config_table(path: str | Path) -> dict[str, Any]:
    """The TOML table of a config file, read within the size bound, not yet validated and its
    secret references not resolved (`edge-gateway status` needs only [health] and must work
    outside the service, where credential: references cannot be read)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_FILE_BYTES + 1)  # a huge file is never read in full
    except OSError as error:
        raise ConfigError([f"{path}: cannot read ({error.strerror or error})"]) from None
    if len(data) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError([f"{path}: too large (more than {MAX_CONFIG_FILE_BYTES:,} bytes; a config is "
                           "a few kilobytes)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text (byte {error.start})"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML ({error})"]) from None
