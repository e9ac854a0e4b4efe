"""The whole gateway (gateway.runtime.Gateway) with the ble driver against simulated tags:
config -> bleak -> driver -> windows -> outbox -> file uplink."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway
from simulators.ble.tags import CARRIES, DEFAULT_KEY, FORMATS, SimTag
from tests.support.batches import read_batches


@pytest.mark.slow  # end to end through a private D-Bus and the mock BlueZ
async def test_gateway_runs_ble_driver_into_batches(simulator, tmp_path: Path) -> None:
    tags = [SimTag(fmt, 0) for fmt in FORMATS]
    await simulator(tags, interval=0.05, repeats=2)
    config = parse_config({
        "gateway": {"id": "gw-ble", "state_dir": str(tmp_path / "state")},
        "windows": {"window": 60, "grace": 0.0},
        "health": {"listen": ""},
        "drivers": [{
            "type": "ble",
            "stall_timeout": 30.0,
            "bthome_keys": {t.mac: DEFAULT_KEY.hex() for t in tags if t.format == "bthome_enc"},
        }],
    })
    gateway = Gateway(config)
    summary = await gateway.run(duration=2.0, drain=True)

    documents = read_batches(tmp_path / "state" / "batches" / "batches.jsonl.gz")
    records = [r for doc in documents for r in doc.windows]
    # how many advertisements arrive in 2 s is the clock's; that each reading is in a window
    # (the drain closes them all) is exact
    assert summary.decode_errors == 0 and summary.readings == sum(r.count for r in records) > 0
    assert all(doc.gateway == "gw-ble" for doc in documents)
    for tag in tags:
        device = "ble:" + tag.mac
        sent = {metric: [m[metric] for m in tag.sent] for metric in CARRIES[tag.format]}
        for metric, values in sent.items():
            mine = [r for r in records if r.device == device and r.metric == metric]
            assert mine, (tag.format, metric)
            # Tags kept advertising while the gateway shut down: what arrived is a prefix.
            assert 1 <= sum(r.count for r in mine) <= len(values)
            assert min(values) <= min(r.min for r in mine) and max(r.max for r in mine) <= max(values)
