"""Issue 17, end to end: evictions explain only the readings the evicted batches covered.

A small city fills a tiny outbox during an uplink outage (batches are evicted), then the gateway
is SIGKILLed and started again. The readings sent while it was down, and those the kill caught
unstored, are measured but deliberately not applied (`withhold`): they must come out
unexplained, to the reading, however many readings the evicted batches held."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.city.runner import CityRun, RunOptions
from simulators.city.scenario import parse_scenario


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_evictions_do_not_absorb_a_restart_loss(tmp_path: Path) -> None:
    scenario = parse_scenario({
        # 64 KiB for batches and window state, 20 records a batch: a 10 s outage overflows it
        "city": {"name": "evict-kill", "duration": 18.0, "window": 1, "grace": 0.5, "max_lateness": 600.0,
                 "uplink": "file", "outbox_max_bytes": 64 * 1024, "batch_max_records": 20, "checkpoint": 1.0},
        "lorawan": [{"count": 60, "interval": 0.5, "gateways": 1}],
        "faults": [{"kind": "uplink_outage", "at": 1.0, "duration": 10.0},
                   {"kind": "gateway_kill", "at": 13.0, "down": 2.0}],
    })
    withhold = frozenset({"gateway_down", "unstored"})
    report = await CityRun(scenario, 1, RunOptions(workdir=tmp_path / "city", progress=False, withhold=withhold)).run()

    line = report["protocols"]["lorawan-udp"]
    dropped = report["dropped"]
    evictions = dropped["evictions"]
    # batches were evicted, each named by its seq with the readings it took, per device
    # (the outbox's own table, read after the stop, holds at least what /metrics said last)
    assert evictions["evicted_seqs"] >= dropped["outbox_evicted_batches"] > 0
    assert evictions["undescribed_seqs"] == []
    assert line["evicted"] == sum(sum(devices.values()) for devices in evictions["by_seq"].values()) > 0
    assert line["evicted"] <= dropped["outbox_evicted_readings"]
    # every seq missing at the platform is one the gateway evicted
    assert dropped["missing_seq_not_evicted"] == {}
    assert sum(map(len, dropped["missing_seq"].values())) == evictions["evicted_seqs"]
    # the restart's loss was measured, left unapplied, and nothing else took it
    withheld = sum(dropped["withheld"].values())
    assert dropped["withheld"]["gateway_down"] > 0
    assert (line["gateway_down"], line["unstored"]) == (0, 0)
    other = line["gateway_dropped"] + line["link_losses"]  # kernel UDP drops, if any, may explain some
    assert withheld - other <= line["unexplained"] <= withheld
    assert line["unexplained"] > 0
