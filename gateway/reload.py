"""Reloading the config while the gateway runs (SIGHUP, `systemctl reload`, remote configs).

A reload compares the validated settings of the running config with the new one, struct by
struct: only a driver or uplink whose settings changed is stopped and started again, an added one
starts, a removed one stops. Windows, the outbox and its cursors carry on: readings a stopped
driver already handed over stay in their windows, and an uplink keeps its cursor across its
restart (it is named by `name`, so renaming an uplink is a removal plus an addition).

What cannot change in a running process is refused unless unchanged: `gateway.id` (it is in
every batch and topic), `gateway.state_dir` (the outbox database is open there), every
`windows.*` key (open windows are aligned to `window`; lateness and checkpoints are promises
about them) and every `outbox.*` key (the bound and batch size belong to the open database).
Those take a restart.

A new config is read and checked exactly as `check-config` reads it (`parse_config`, the same
problem lines), after three checks of its own: at most `MAX_CONFIG_BYTES`, UTF-8, and TOML that
parses (a file cut short mid-table fails here). A config refused for any reason changes nothing.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.config import Config, parse_config
from gateway.errors import ConfigError
from gateway.model import Kind, configure_metrics

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = [
    "MAX_CONFIG_BYTES",
    "RESULTS",
    "ReloadCollector",
    "ReloadPlan",
    "ReloadResult",
    "config_from_text",
    "core_problems",
    "plan_reload",
    "read_config_file",
    "restore_metrics",
]

# A gateway config is a few KiB; anything past this is not one (and must not fill memory).
MAX_CONFIG_BYTES = 1024 * 1024

# Every value of edge_gateway_config_reloads_total{result}: exported from the first scrape on.
RESULTS = ("applied", "unchanged", "invalid", "refused", "failed")


def config_from_text(text: bytes | str, source: str) -> Config:
    """Decode and validate a config from its bytes; raises ConfigError naming `source`."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"{source}: too large ({size:,} bytes; a config is at most "
                           f"{MAX_CONFIG_BYTES:,})"])
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError([f"{source}: not UTF-8 text (byte {error.start})"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{source}: not valid TOML ({error})"]) from None
    return parse_config(raw, source=source)


def read_config_file(path: str | Path) -> tuple[bytes, Config]:
    """The file's bytes and its validated config. Reads at most one byte past the limit, so a
    huge file (or /dev/zero) costs nothing."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read ({error.strerror or error})"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: too large (more than {MAX_CONFIG_BYTES:,} bytes; a config "
                           "is a few KiB)"])
    return data, config_from_text(data, str(path))


def restore_metrics(config: Config) -> None:
    """Declare `config`'s [metrics] rows again: validating a refused config declared its own."""
    configure_metrics({name: (row.unit, Kind[row.kind.upper()]) for name, row in config.metrics.items()})


def _differences(prefix: str, old: msgspec.Struct, new: msgspec.Struct) -> Iterator[tuple[str, Any, Any]]:
    for name in old.__struct_fields__:
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            yield f"{prefix}.{name}", before, after


def core_problems(old: Config, new: Config) -> list[str]:
    """One line per key that a running gateway cannot change (module docstring says why)."""
    problems = []
    for prefix, before, after in (
        ("gateway", old.gateway, new.gateway),
        ("windows", old.windows, new.windows),
        ("outbox", old.outbox, new.outbox),
    ):
        for key, was, now in _differences(prefix, before, after):
            problems.append(
                f"{key}: cannot change while the gateway runs (running {was!r}, new config {now!r}); "
                "restart the service to apply it"
            )
    return problems


@dataclass
class ReloadPlan:
    """Names of what a reload stops and starts; a changed one is in both lists."""

    stop_drivers: list[str] = field(default_factory=list)
    start_drivers: list[str] = field(default_factory=list)
    stop_uplinks: list[str] = field(default_factory=list)
    start_uplinks: list[str] = field(default_factory=list)
    # anything else that differs (health, log, runtime, metrics, remote_config)
    other: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.stop_drivers or self.start_drivers or self.stop_uplinks or self.start_uplinks
                    or self.other)

    def describe(self) -> dict[str, list[str]]:
        """What changed, by name: added, removed, restarted (changed settings)."""
        out: dict[str, list[str]] = {}
        for kind, stopped, started in (
            ("drivers", self.stop_drivers, self.start_drivers),
            ("uplinks", self.stop_uplinks, self.start_uplinks),
        ):
            restarted = [n for n in started if n in stopped]
            if restarted:
                out[f"{kind}_restarted"] = restarted
            if added := [n for n in started if n not in stopped]:
                out[f"{kind}_added"] = added
            if removed := [n for n in stopped if n not in started]:
                out[f"{kind}_removed"] = removed
        if self.other:
            out["sections"] = self.other
        return out


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare the validated settings structs (secrets already resolved: a changed password
    file restarts its uplink)."""
    plan = ReloadPlan()
    for settings_old, settings_new, stop, start in (
        (old.drivers, new.drivers, plan.stop_drivers, plan.start_drivers),
        (old.uplinks, new.uplinks, plan.stop_uplinks, plan.start_uplinks),
    ):
        before = {s.name: s for s in settings_old}
        after = {s.name: s for s in settings_new}
        stop.extend(name for name, s in before.items() if after.get(name) != s)
        start.extend(name for name, s in after.items() if before.get(name) != s)
    for section in ("health", "log", "runtime", "metrics", "remote_config"):
        if getattr(old, section) != getattr(new, section):
            plan.other.append(section)
    return plan


@dataclass
class ReloadResult:
    """What one reload attempt did: `result` is one of RESULTS."""

    result: str
    problems: list[str] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result in ("applied", "unchanged")


class ReloadCollector:
    """`edge_gateway_config_reloads_total{result}` and the time of the last applied config
    (the runtime registers it in the gateway's registry with the other components' metrics)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Any]:
        reloads = CounterMetricFamily("edge_gateway_config_reloads",
                                      "Config reloads (SIGHUP or remote), by result", labels=["result"])
        counts = self.gateway.reloads
        for result in RESULTS:
            reloads.add_metric([result], counts.get(result, 0))
        yield reloads
        yield GaugeMetricFamily("edge_gateway_config_last_applied_timestamp_seconds",
                                "When the running config was applied (start or reload, Unix s)",
                                value=self.gateway.config_applied_at)
        remote = getattr(self.gateway, "remote_config", None)
        if remote is not None:
            yield from remote.collect()
