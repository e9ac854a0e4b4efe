"""The charge points in several worker processes (simulators.city.procs): the same charge points
boot and report as in one process, the books stay exact, and a cp_disconnect fault reaches the
workers over their control channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.city.ocpp_fleet import first_idents
from simulators.city.procs import ChargePointProcs, auto_procs
from simulators.city.runner import CityRun, RunOptions
from simulators.city.scenario import ChargePointGroup, parse_scenario


def test_the_first_charge_points_are_taken_in_fleet_order_across_groups() -> None:
    groups = [ChargePointGroup(count=3), ChargePointGroup(count=0), ChargePointGroup(count=4, version="2.0.1")]
    assert first_idents(groups, 5) == ["CP0-0000", "CP0-0001", "CP0-0002", "CP2-0000", "CP2-0001"]
    assert first_idents(groups, 99) == first_idents(groups, 7)
    assert len(first_idents(groups, 99)) == 7


def test_one_process_until_a_share_would_exceed_its_charge_points() -> None:
    assert [auto_procs(n) for n in (0, 1, 4000, 4001, 14_040, 23_400)] == [1, 1, 1, 2, 4, 6]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_three_workers_report_every_charge_point_and_drop_the_ones_asked(tmp_path: Path) -> None:
    scenario = parse_scenario({
        "city": {"name": "procs", "duration": 8.0, "window": 2, "grace": 1.0, "uplink": "file"},
        "charge_points": [{"count": 7, "interval": 1.0}, {"count": 4, "interval": 1.0, "version": "2.0.1"}],
        "faults": [{"kind": "cp_disconnect", "at": 3.0, "count": 5}],
    })
    run = CityRun(scenario, 1, RunOptions(workdir=tmp_path / "city", progress=False, sim_procs=3))
    assert isinstance(run.ocpp, ChargePointProcs)
    report = await run.run()

    line = report["protocols"]["ocpp"]
    assert line["unexplained"] == 0, line
    assert line["devices"] == 7 * 3 + 4 * 2  # connectors, plus connector 0 of the 1.6 ones
    assert line["sent"] == line["covered"] > 0
    facts = report["run"]
    assert facts["charge_points_booted"] == 11
    assert facts["ocpp_errors"] == {}
    assert facts["ocpp_drops"] == 5
    assert facts["ocpp_reconnects"] >= 5
    assert [w.process.returncode for w in run.ocpp.workers] == [0, 0, 0]
