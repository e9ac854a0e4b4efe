"""A gap in the gateway's own time (hours of downtime) ends each carried state once: nothing is
reported for the hours the gateway was not running, and the first tick after the restart is
one step, not one record per window per series."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import registry
from gateway.config import parse_config
from gateway.runtime import Gateway
from tests.support.batches import read_batches
from tests.support.wait import async_wait_for

CONNECTORS = 200
HOURS_OFF = 6


@pytest.fixture
def status_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.DRIVER_PACKAGES, "status", "tests.gateway.status_driver")


def config(tmp_path: Path, connectors: int) -> Any:
    return parse_config({
        "gateway": {"id": "gw-gap", "state_dir": str(tmp_path / "state")},
        "windows": {"window": 1, "grace": 0.1, "checkpoint": 0.2},
        "outbox": {"commit_interval": 0.05},
        "health": {"listen": ""},
        "drivers": [{"type": "status", "name": "status", "connectors": connectors}],
    })


async def test_restart_after_hours_off_ends_each_carried_state_once(tmp_path: Path, status_driver: None) -> None:
    offset = [-HOURS_OFF * 3600.0]  # the first run happens six hours "ago"

    def clock() -> float:
        return time.time() + offset[0]

    first = Gateway(config(tmp_path, CONNECTORS), clock=clock)
    run = asyncio.create_task(first.run())
    await async_wait_for(lambda: first.aggregator.stats.closed == CONNECTORS and first.runners[0].forwarded_records >= CONNECTORS,
                         timeout=20, what="the statuses closed and forwarded")
    first.request_stop()
    await asyncio.wait_for(run, 20)
    path = tmp_path / "state" / "batches" / "batches.jsonl.gz"
    before = len(read_batches(path))

    offset[0] = 0.0
    second = Gateway(config(tmp_path, 0), clock=clock)
    run = asyncio.create_task(second.run())
    await async_wait_for(lambda: second.runners and second.runners[0].forwarded_batches >= 1, timeout=20, what="a batch after the restart")
    second.request_stop()
    await asyncio.wait_for(run, 20)
    after = read_batches(path)[before:]
    assert second.time_gaps == 1
    assert sum(len(b.windows) for b in after) == 0, "no record for the hours off"
    ended = [e for b in after for e in b.ended]
    assert len(ended) == CONNECTORS and {e.state for e in ended} == {"Available"}
    assert {e.start for e in ended} == {first.aggregator.closed_before}
    assert all(not b.keyframe for b in after), "no state is known to carry on"
