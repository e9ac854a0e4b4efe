"""`edge-gateway`: run the daemon, check a config, print live counters."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib import resources
from typing import Any

from gateway import __version__
from gateway.config import Config, HealthSection, load_config, parse_config, read_config_table
from gateway.errors import ConfigError, StorageError

__all__ = ["default_config", "main"]


def default_config() -> Config:
    """The embedded default: replays the bundled day of city data into the file uplink, with a
    local state directory and no server needed, so `edge-gateway run` works out of the box."""
    sample = resources.files("drivers.replay") / "data" / "city-day.csv.gz"
    raw: dict[str, Any] = {
        "gateway": {"id": "edge-demo", "state_dir": "edge-gateway-state"},
        "windows": {"window": 5, "grace": 1.0, "max_lateness": 60.0, "checkpoint": 2.0},
        "health": {"listen": "127.0.0.1:9108"},
        "drivers": [{"type": "replay", "name": "city-sample", "path": str(sample), "speed": 4320.0}],
        "uplinks": [{"type": "file", "name": "file"}],
    }
    return parse_config(raw, source="<embedded default>")


def _load(path: str | None) -> Config:
    return default_config() if path is None else load_config(path)


def _load_or_report(path: str | None) -> Config | None:
    """The config to run, or None after printing every problem (the caller exits 2)."""
    try:
        return _load(path)
    except ConfigError as error:
        for problem in error.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    from gateway.checks import check_host

    try:
        config = load_config(args.file)
    except ConfigError as error:
        print(f"{args.file}: {_count(len(error.problems), 'error')}", file=sys.stderr)
        for problem in error.problems:
            print(f"  error    {problem}", file=sys.stderr)
        return 2
    findings = check_host(config)
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity == "warning"]
    if errors:
        print(f"{args.file}: {_count(len(errors), 'error')} on this box, "
              f"{_count(len(warnings), 'warning')}", file=sys.stderr)
        for finding in findings:
            print(f"  {finding.severity:<8} {finding}", file=sys.stderr)
        return 2
    print(summarise(config))
    if warnings:
        print(f"{_count(len(warnings), 'warning')}:")
        for finding in warnings:
            print(f"  warning  {finding}")
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def summarise(config: Config) -> str:
    w, o = config.windows, config.outbox
    lines = [
        f"config {config.source}: OK",
        f"  gateway      {config.gateway.id}   state in {config.gateway.state_dir}",
        f"  windows      {w.window} s, grace {w.grace} s, late revisions up to {w.max_lateness} s, "
        f"checkpoint every {w.checkpoint} s",
        f"  outbox       at most {o.max_bytes / 1048576:.1f} MiB, {o.batch_max_records} records/batch, "
        f"commit every {o.commit_interval} s",
        f"  metrics      {('http://' + config.health.listen + '/metrics') if config.health.listen else 'off'}",
        f"  log          {config.log.level}, {config.log.format}",
        "  drivers",
        *[f"    - {d.name} ({d.type})" for d in config.drivers],
        "  uplinks",
        *[f"    - {u.name} ({u.type}), {u.max_in_flight} in flight" for u in config.uplinks],
    ]
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.runtime import Gateway

    config = _load_or_report(args.config)
    if config is None:
        return 2
    configure_logging(config.log.level, config.log.format)
    gateway = Gateway(config)
    try:
        summary = asyncio.run(gateway.run(args.duration, drain=args.drain))
    except StorageError as error:
        print(f"edge-gateway: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"edge-gateway: {error}", file=sys.stderr)
        return 1
    if args.summary:
        print(summary.render())
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.testmode import run_test

    config = _load_or_report(args.config)
    if config is None:
        return 2
    configure_logging(config.log.level, config.log.format)
    shown = args.driver or ", ".join(d.name for d in config.drivers)
    print(f"edge-gateway test: drivers {shown} for {args.seconds:g} s; no windows, no uplinks "
          "(Ctrl-C stops)", flush=True)
    print(f"{'event time (UTC)':<24}  {'device':<28} {'metric':<24} {'value':>12} unit", flush=True)
    try:
        report = asyncio.run(
            run_test(config, driver=args.driver, seconds=args.seconds, count=args.count, out=sys.stdout)
        )
    except LookupError as error:
        print(f"edge-gateway test: {error.args[0]}", file=sys.stderr)
        return 2
    print(report.render())
    return 1 if report.failed or not sum(report.readings.values()) else 0


INSTALLED_CONFIG = "/etc/edge-gateway/gateway.toml"


def _health_base(args: argparse.Namespace, command: str) -> str | None:
    """The running gateway's health listener from `--url` or the config's [health] listen; ""
    when the config turns it off, None when the config cannot say (each after saying why). Only
    that key is read: the rest of the config (and its secrets) is the service's business."""
    if args.url is not None:
        base: str = args.url
    else:
        try:
            health = read_config_table(args.config).get("health", {})
        except ConfigError as error:
            print(f"edge-gateway {command}: {args.config}: {error.problems[0]}", file=sys.stderr)
            return None
        listen = health.get("listen", HealthSection().listen) if isinstance(health, dict) else None
        if not isinstance(listen, str):
            print(f"edge-gateway {command}: {args.config}: [health] listen: expected \"host:port\", "
                  f"found {listen!r}", file=sys.stderr)
            return None
        if not listen:
            print(f"edge-gateway {command}: [health] listen is off in {args.config}", file=sys.stderr)
            return ""
        host, _, port = listen.rpartition(":")
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
        base = f"http://{host}:{port}"
    return base.rstrip("/").removesuffix("/metrics").removesuffix("/status.json")


def _cmd_status(args: argparse.Namespace) -> int:
    import json
    import urllib.request

    from gateway.status import EXIT_CODES, render_text

    base = _health_base(args, "status")
    if not base:
        return 3
    try:
        with urllib.request.urlopen(base + "/status.json", timeout=5) as answer:  # noqa: S310 - local
            status = json.load(answer)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        print(f"edge-gateway status: no gateway answering at {base} ({reason})", file=sys.stderr)
        return 3
    print(json.dumps(status, indent=1) if args.json else render_text(status))
    return EXIT_CODES.get(status.get("verdict", ""), 3)


def _reload_counts(base: str) -> dict[str, float]:
    from gateway.health import fetch_status

    return {labels.get("result", ""): value for labels, value in fetch_status(base + "/metrics").get("config_reloads", [])}


def _cmd_reload(args: argparse.Namespace) -> int:
    """SIGHUP, then wait until the gateway counts the reload: systemd.service(5) asks ExecReload=
    for a command that waits for the reload to complete, not one that only queues a signal, so
    `systemctl reload` returns once the config is applied and fails when it was refused."""
    import signal
    import time

    from gateway.reload import RESULTS, ReloadResult

    base = _health_base(args, "reload")
    before: dict[str, float] | None = None
    if base:
        try:
            before = _reload_counts(base)
        except (OSError, ValueError) as error:
            print(f"edge-gateway reload: no gateway answering at {base} "
                  f"({getattr(error, 'reason', None) or error})", file=sys.stderr)
    try:
        os.kill(args.pid, signal.SIGHUP)
    except OSError as error:
        print(f"edge-gateway reload: cannot signal process {args.pid}: {error.strerror}", file=sys.stderr)
        return 3
    if not base or before is None:
        print(f"edge-gateway reload: sent SIGHUP to {args.pid}; the result is in the journal "
              "(config_reloaded or config_reload_refused)", file=sys.stderr)
        # with the listener off nothing can say more, as with kill -HUP; otherwise unconfirmed
        return 0 if base == "" else 3
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            after = _reload_counts(base)
        except (OSError, ValueError):
            continue  # a reload that changes [health] listen restarts the listener
        counted = [r for r in RESULTS if after.get(r, 0) > before.get(r, 0)]
        if counted:
            # a remote config applied at the same moment counts too; the worst result wins
            worst = next(r for r in reversed(RESULTS) if r in counted)
            if ReloadResult(worst).ok:
                print(f"edge-gateway reload: {worst}")
                return 0
            print(f"edge-gateway reload: {worst}; the running config stays. Why: the journal's "
                  f"config_reload_refused line, or `edge-gateway check-config {args.config}`", file=sys.stderr)
            return 1
    print(f"edge-gateway reload: no result within {args.timeout:g} s; see the journal", file=sys.stderr)
    return 3


def _health_arguments(command: argparse.ArgumentParser) -> None:
    """Where a command finds the running gateway: `_health_base` reads these."""
    command.add_argument("--config", "-c", default=INSTALLED_CONFIG,
                         help=f"config file, for [health] listen ({INSTALLED_CONFIG})")
    command.add_argument("--url", help="the health listener, e.g. http://127.0.0.1:9108")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway (embedded demo default without --config)")
    run.add_argument("--config", "-c", help="TOML config file")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument(
        "--drain", action="store_true", help="on stop, close every window and wait for delivery"
    )
    run.add_argument("--summary", action="store_true", help="print a run summary on exit")
    run.set_defaults(func=_cmd_run)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check)
    test = sub.add_parser("test", help="run the drivers alone and print each decoded reading")
    test.add_argument("--config", "-c", help="TOML config file (embedded demo default without it)")
    test.add_argument("--driver", help="only the driver with this name")
    test.add_argument("--seconds", type=float, default=30.0, help="stop after this long (30)")
    test.add_argument("--count", type=int, default=0, help="stop after this many readings")
    test.set_defaults(func=_cmd_test)
    status = sub.add_parser(
        "status", help="one screen on the running gateway; exit 0 ok, 1 degraded, 2 unhealthy, 3 no answer"
    )
    _health_arguments(status)
    status.add_argument("--json", action="store_true", help="the status as JSON, for scripts")
    status.set_defaults(func=_cmd_status)
    reload = sub.add_parser(
        "reload", help="re-read the config in the running gateway (SIGHUP) and wait for the result; "
                       "exit 0 applied or unchanged (or signalled, with [health] listen off), 1 refused, 3 unconfirmed "
                       "(ExecReload= of the unit)")
    reload.add_argument("--pid", type=int, required=True, help="the gateway's process ($MAINPID in the unit)")
    _health_arguments(reload)
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the result (60)")
    reload.set_defaults(func=_cmd_reload)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader left (`check-config ... | head`): stop quietly; the interpreter's final
        # flush must not fail again, so stdout now points at /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
