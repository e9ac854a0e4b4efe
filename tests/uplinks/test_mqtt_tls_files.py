"""A TLS file the MQTT uplink cannot use: the error names the file, and the runner stops the
uplink instead of retrying it forever as if the link were down (issue 14)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.backoff import Backoff
from gateway.mqtt import TlsFileError
from gateway.uplinks.base import UplinkContext
from gateway.uplinks.mqtt import Config, load_uplink
from gateway.uplinks.runner import UplinkRunner
from tests.support.mosquitto import TlsFiles
from tests.support.ports import free_port
from tests.support.wait import async_wait_for
from tests.uplinks.conftest import GATEWAY

MqttUplink = load_uplink()


class Recorder:
    """The uplink context's logger: keeps (level, message, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda message, **fields: self.lines.append((level, message, fields))


def _context(tmp_path: Path, log: Recorder) -> UplinkContext:
    return UplinkContext("mqtt", gateway_id=GATEWAY, state_dir=str(tmp_path), logger=log)


async def _no_outbox(*args: Any) -> Any:
    raise AssertionError("nothing may be sent")


def _runner(config: Config, ctx: UplinkContext) -> UplinkRunner:
    return UplinkRunner(MqttUplink(config, ctx), ctx, _no_outbox, backoff=Backoff(0.01, 0.05))


async def test_missing_ca_file_is_named_and_not_retried(tmp_path: Path) -> None:
    missing = tmp_path / "platform-ca.pem"
    log = Recorder()
    ctx = _context(tmp_path, log)
    config = Config(host="127.0.0.1", port=free_port(), tls=True, ca_file=str(missing))
    with pytest.raises(TlsFileError) as caught:
        await MqttUplink(config, ctx).start()
    assert caught.value.reason == f"ca_file {str(missing)!r}: no such file"
    assert ctx.counters == {"connect_failed_tls_files": 1}

    runner = _runner(config, ctx)
    await asyncio.wait_for(runner.run(), 10)  # returns by itself: no retry loop
    assert runner.stopped and runner.failures == 1
    assert runner.last_error == f"ca_file {str(missing)!r}: no such file"
    errors = [line for line in log.lines if line[0] == "error"]
    assert errors == [("error", "uplink_stopped",
                       {"reason": f"ca_file {str(missing)!r}: no such file",
                        "note": "retrying cannot fix this; batches stay in the outbox until it is fixed and "
                                "the gateway restarted"})]
    assert ctx.counters == {"connect_failed_tls_files": 2}
    await runner.stop(0.5)


async def test_malformed_client_certificate_is_named(tmp_path: Path, tls_files: TlsFiles) -> None:
    junk = tmp_path / "gw.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    ctx = _context(tmp_path, Recorder())
    config = Config(host="127.0.0.1", port=free_port(), tls=True, ca_file=str(tls_files.ca),
                    cert_file=str(junk), key_file=str(tls_files.client_key))
    runner = _runner(config, ctx)
    await asyncio.wait_for(runner.run(), 10)
    assert runner.stopped
    assert runner.last_error.startswith(f"cert_file {str(junk)!r}: cert_file/key_file not a PEM "
                                        "certificate and key")


async def test_an_unreachable_broker_is_still_retried(tmp_path: Path, tls_files: TlsFiles) -> None:
    # the contrast: a link failure with good files keeps the runner retrying
    ctx = _context(tmp_path, Recorder())
    config = Config(host="127.0.0.1", port=free_port(), tls=True, ca_file=str(tls_files.ca),
                    connect_timeout=2)
    runner = _runner(config, ctx)
    task = asyncio.create_task(runner.run())
    try:
        # every failed attempt counted by its cause (the count is taken before the runner's, so
        # the two agree once the attempt is fully handled); three attempts show it retries
        refused = await async_wait_for(
            lambda: runner.failures >= 3
            and ctx.counters.get("connect_failed_connection_refused") == runner.failures
            and runner.failures,
            what="three failed attempts, each counted as refused")
        assert not task.done() and not runner.stopped
        assert ctx.counters == {"connect_failed_connection_refused": refused}
    finally:
        await runner.stop(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
