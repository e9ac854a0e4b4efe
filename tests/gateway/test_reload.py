"""Reload (SIGHUP, `systemctl reload`): only what changed restarts, nothing is lost, a bad config
changes nothing and says why (gateway/reload.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.health import fetch_status
from gateway.reload import MAX_CONFIG_BYTES, config_from_text, core_problems, plan_reload
from gateway.runtime import Gateway
from tests.support.batches import read_batches
from tests.support.ports import free_port
from tests.support.wait import async_wait_for, wait_for

REPO = Path(__file__).resolve().parents[2]


def write_replay(path: Path, device: str, readings: int = 20, step: float = 0.01) -> Path:
    """A short recording played in a loop: `1 / step` readings a second while the gateway runs."""
    lines = [json.dumps({"device": device, "metric": "temperature", "value": 20.0 + i / 4, "ts": 1e9 + i * step})
             for i in range(readings)]
    path.write_text("\n".join(lines) + "\n")
    return path


def config_text(tmp_path: Path, *, drivers: list[str], uplinks: str = "", window: int = 1, extra: str = "",
                listen: str = "") -> str:
    tables = "".join(
        f'\n[[drivers]]\ntype = "replay"\nname = "{name}"\npath = "{tmp_path / (name + ".jsonl")}"\nloop = true\n'
        for name in drivers
    )
    return f"""
[gateway]
id = "gw-reload"
state_dir = "{tmp_path / 'state'}"
[windows]
window = {window}
grace = 0.1
checkpoint = 0.2
[outbox]
commit_interval = 0.05
[health]
listen = "{listen}"
[runtime]
restart_backoff_initial = 0.05
restart_backoff_max = 0.2
shutdown_timeout = 10
{extra}
{tables}
[[uplinks]]
type = "file"
name = "file"
{uplinks}
"""


def windows_delivered(path: Path) -> dict[str, int]:
    """Readings covered by the delivered windows, per device (the last revision of each window)."""
    latest: dict[tuple[str, str, int], tuple[int, int]] = {}
    for document in read_batches(path):
        for record in document.windows:
            key = (record.device, record.metric, record.start)
            if key not in latest or record.revision > latest[key][0]:
                latest[key] = (record.revision, record.count or 0)
    totals: dict[str, int] = {}
    for (device, _, _), (_, count) in latest.items():
        totals[device] = totals.get(device, 0) + count
    return totals


# -- the pieces -------------------------------------------------------------------------------

def test_plan_restarts_only_what_changed(tmp_path: Path) -> None:
    old = config_from_text(config_text(tmp_path, drivers=["a", "b"]), "old")
    new = config_from_text(config_text(tmp_path, drivers=["a", "c"], uplinks="max_in_flight = 2"), "new")
    plan = plan_reload(old, new)
    assert (plan.stop_drivers, plan.start_drivers) == (["b"], ["c"])
    assert (plan.stop_uplinks, plan.start_uplinks) == (["file"], ["file"])
    assert plan.describe() == {"drivers_added": ["c"], "drivers_removed": ["b"], "uplinks_restarted": ["file"]}
    assert not plan_reload(old, config_from_text(config_text(tmp_path, drivers=["a", "b"]), "same"))


def test_core_sections_cannot_change_live(tmp_path: Path) -> None:
    old = config_from_text(config_text(tmp_path, drivers=["a"]), "old")
    new = config_from_text(config_text(tmp_path, drivers=["a"], window=30).replace("gw-reload", "gw-other"), "new")
    assert core_problems(old, new) == [
        "gateway.id: cannot change while the gateway runs (running 'gw-reload', new config 'gw-other'); "
        "restart the service to apply it",
        "windows.window: cannot change while the gateway runs (running 1, new config 30); "
        "restart the service to apply it",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[gateway]\nid = \"gw-reload\"\n[windows]\nwindow = ", "not valid TOML"),
        (b"\x00\x01\x02 binary", "not valid TOML"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
        (b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1), "too large"),
    ],
    ids=["truncated", "not-toml", "not-utf8", "too-large"],
)
def test_bad_bytes_say_why(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_text(data, "/etc/edge-gateway/gateway.toml")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"/etc/edge-gateway/gateway.toml: {message}")


# -- in process, under load -------------------------------------------------------------------

async def test_reload_under_load_restarts_only_changes_and_balances_the_books(tmp_path: Path) -> None:
    for name in ("load", "second"):
        write_replay(tmp_path / f"{name}.jsonl", f"test:{name}/1")
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(tmp_path, drivers=["load"]))
    gateway = Gateway(load_config(path))
    task = asyncio.create_task(gateway.run(duration=120, drain=True))
    await async_wait_for(lambda: gateway.supervisors and gateway.supervisors[0].ctx.readings >= 100, timeout=20)
    load = gateway.supervisors[0]
    file_runner = gateway.runners[0]

    # 1: a driver and an uplink added, the file uplink's settings changed
    path.write_text(config_text(tmp_path, drivers=["load", "second"], uplinks="""max_in_flight = 4
[[uplinks]]
type = "file"
name = "copy"
directory = "copy"
"""))
    gateway.request_reload()
    await async_wait_for(lambda: gateway.reloads.get("applied") == 1, timeout=20, what="first reload")
    assert gateway.supervisors[0] is load, "an unchanged driver keeps running"
    assert [s.ctx.name for s in gateway.supervisors] == ["load", "second"]
    assert gateway.runners[0] is not file_runner and gateway.runners[0].max_in_flight == 4
    second = gateway.supervisors[1]
    await async_wait_for(lambda: second.ctx.readings >= 100 and gateway.runners[1].forwarded_batches >= 3,
                         timeout=20, what="the added driver and uplink at work")
    assert await gateway.outbox_call(lambda ob: sorted(ob.uplinks)) == ["copy", "file"]

    # 2: refused configs change nothing: invalid (same problems as check-config), then a core change
    path.write_text(config_text(tmp_path, drivers=["load"], uplinks="colour = 'red'"))
    with pytest.raises(ConfigError) as expected:
        load_config(path)
    result = await gateway.reload()
    assert result.result == "invalid" and result.problems == expected.value.problems
    path.write_text(config_text(tmp_path, drivers=["load"], window=5))
    result = await gateway.reload()
    assert result.result == "refused"
    assert result.problems == ["windows.window: cannot change while the gateway runs (running 1, new config 5); "
                                "restart the service to apply it"]
    assert [s.ctx.name for s in gateway.supervisors] == ["load", "second"] and len(gateway.runners) == 2

    # 3: the added ones removed again: the copy's cursor goes, batches no longer wait for it
    path.write_text(config_text(tmp_path, drivers=["load"], uplinks="max_in_flight = 4"))
    result = await gateway.reload()
    assert result.result == "applied" and result.changes == {"drivers_removed": ["second"],
                                                              "uplinks_removed": ["copy"]}
    second_readings = second.ctx.readings
    assert await gateway.outbox_call(lambda ob: ob.uplinks) == ["file"]
    before = load.ctx.readings
    await async_wait_for(lambda: load.ctx.readings >= before + 100, timeout=20)
    assert gateway.reloads == {"applied": 2, "invalid": 1, "refused": 1}

    gateway.request_stop()
    summary = await asyncio.wait_for(task, timeout=30)
    assert summary.outbox_batches == 0 and summary.evicted_batches == 0
    delivered = windows_delivered(tmp_path / "state" / "batches" / "batches.jsonl.gz")
    assert delivered == {"test:load/1": load.ctx.readings, "test:second/1": second_readings}
    assert summary.readings == load.ctx.readings


# -- a real process, a real SIGHUP ------------------------------------------------------------

def start_two_driver_process(tmp_path: Path, *, summary: bool) -> tuple[subprocess.Popen[bytes], Path, int]:
    """A gateway process running driver "load" (recordings for "load" and "second" written),
    its stderr in gateway.log: (process, config path, health port)."""
    for name in ("load", "second"):
        write_replay(tmp_path / f"{name}.jsonl", f"test:{name}/1")
    port = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(tmp_path, drivers=["load"], listen=f"127.0.0.1:{port}"))
    with open(tmp_path / "gateway.log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(path), *(["--summary"] if summary else [])],
            cwd=REPO, stdout=subprocess.PIPE if summary else subprocess.DEVNULL, stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return process, path, port

def test_sighup_reloads_a_running_process(tmp_path: Path) -> None:
    process, path, port = start_two_driver_process(tmp_path, summary=True)
    url = f"http://127.0.0.1:{port}/metrics"

    def metric(name: str) -> dict[str, float]:
        try:
            return {next(iter(labels.values()), ""): value for labels, value in fetch_status(url).get(name, [])}
        except OSError:
            return {}

    try:
        wait_for(lambda: metric("readings").get("load", 0) > 50, timeout=30, what="readings")
        assert metric("config_reloads") == {r: 0.0 for r in ("applied", "unchanged", "invalid", "refused", "failed")}
        path.write_bytes(b"[gateway]\nid = ")  # truncated mid-write
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: metric("config_reloads").get("invalid") == 1.0, timeout=20, what="invalid counted")
        path.write_text(config_text(tmp_path, drivers=["load", "second"], listen=f"127.0.0.1:{port}"))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: metric("readings").get("second", 0) > 50, timeout=30, what="the added driver")
        assert metric("config_reloads")["applied"] == 1.0
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    text = (tmp_path / "gateway.log").read_text()
    assert process.returncode == 0, text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    refused = [e for e in lines if e["event"] == "config_reload_refused"]
    assert len(refused) == 1 and refused[0]["problems"][0].startswith(f"{path}: not valid TOML")
    assert [e.get("drivers_added") for e in lines if e["event"] == "config_reloaded"] == [["second"]]
    assert b"edge-gateway run summary" in out


def test_reload_command_returns_the_outcome_once_it_is_counted(tmp_path: Path) -> None:
    """`edge-gateway reload` (the unit's ExecReload=) returns only when the daemon has counted the
    reload, with exit 0 for applied or unchanged and 1 for refused: `systemctl reload` then says
    whether the new config runs."""
    process, path, port = start_two_driver_process(tmp_path, summary=False)
    url = f"http://127.0.0.1:{port}/metrics"

    def reloads() -> dict[str, float]:
        return {labels["result"]: value for labels, value in fetch_status(url).get("config_reloads", [])}

    def reload_command(pid: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--pid", str(pid), "--config", str(path),
                               "--timeout", "60"], cwd=REPO, capture_output=True, text=True, timeout=90)

    def up() -> bool:
        try:
            return reloads().get("applied") == 0.0
        except OSError:
            return False

    try:
        wait_for(up, timeout=30, what="the health listener")
        path.write_text(config_text(tmp_path, drivers=["load", "second"], listen=f"127.0.0.1:{port}"))
        done = reload_command(process.pid)
        assert (done.returncode, done.stdout) == (0, "edge-gateway reload: applied\n"), done.stderr
        assert reloads()["applied"] == 1.0  # counted before the command returned, not after

        done = reload_command(process.pid)
        assert (done.returncode, done.stdout) == (0, "edge-gateway reload: unchanged\n"), done.stderr

        path.write_text(config_text(tmp_path, drivers=["load", "second"], window=2, listen=f"127.0.0.1:{port}"))
        done = reload_command(process.pid)
        assert done.returncode == 1 and done.stderr.startswith("edge-gateway reload: refused;"), done
        assert reloads() == {"applied": 1.0, "unchanged": 1.0, "invalid": 0.0, "refused": 1.0, "failed": 0.0}
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, (tmp_path / "gateway.log").read_text()[-2000:]
    # the process is gone: nothing to signal, exit 3
    done = reload_command(process.pid)
    assert done.returncode == 3 and "cannot signal process" in done.stderr, done


def test_reload_command_with_the_listener_off_signals_and_says_where_the_result_is(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(tmp_path, drivers=["load"], listen=""))
    # a stand-in for the daemon: it takes the SIGHUP and waits for its stdin to close
    stand_in = subprocess.Popen([sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGHUP, "
                                 "lambda *_: print('hup', flush=True)); print('ready', flush=True); sys.stdin.read()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert stand_in.stdout is not None and stand_in.stdout.readline() == "ready\n"
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--pid", str(stand_in.pid),
                               "--config", str(path)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done
        assert "[health] listen is off" in done.stderr and "the result is in the journal" in done.stderr
        assert stand_in.stdout.readline() == "hup\n"
    finally:
        stand_in.communicate(timeout=30)
