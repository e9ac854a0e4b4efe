"""The fault table (`make faults`, benchmarks/faults.py) in a bounded form: short runs, every
loss named. Two protocol faults, then the gateway's own: its state folder full, SIGKILL and
SIGTERM under load with a restart, and the platform's broker restarted without persistence
(MQTT uplink, `ack = "platform"`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from benchmarks import faults


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_fault_rows_balance_with_every_loss_named(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    code = await asyncio.to_thread(faults.main, ["--only", "corrupt,cp_disconnect", "--duration", "10",
                                                 "--json", str(out)])
    rows = json.loads(out.read_text())
    assert code == 0, rows
    assert [r["fault"] for r in rows] == ["corrupt", "cp_disconnect"]
    for row in rows:
        assert row["sent"] > 0 and row["unexplained"] == 0 and row["missing_seq"] == 0, row
        assert row["sent"] == row["covered"] + row["named"], row
    assert rows[0]["named"] > 0  # the corrupted frames are named, not absorbed


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_gateway_fault_rows_lose_only_what_was_sent_while_it_was_down(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    names = ["disk_full", "gateway_kill", "gateway_term", "broker_restart"]
    # each row's folder (report.json, gateway.log, stored-batches.jsonl) stays for a failure's inspection
    code = await asyncio.to_thread(faults.main, ["--only", ",".join(names), "--duration", "12", "--json", str(out),
                                                 "--workdir", str(tmp_path / "rows")])
    rows = {r["fault"]: r for r in json.loads(out.read_text())}
    assert code == 0, rows
    assert list(rows) == names
    if os.geteuid() != 0:  # a tmpfs needs root: the row says why it was left out
        assert "mount" in rows.pop("disk_full")["skipped"]
    for name, row in rows.items():
        assert row["sent"] > 0 and row["unexplained"] == 0 and row["missing_seq_not_evicted"] == 0, row
        assert row["sent"] == row["covered"] + row["named"], row
        # whatever was lost is named by a down interval, nothing else
        assert set(row["named_by_category"]) <= {"gateway_down", "unstored", "gateway_dropped"}, (name, row)
    # a full disk, a clean stop and a broker without persistence (ack = platform) lose nothing the
    # devices sent while the gateway could hear them; the down interval is named
    for name in ("disk_full", "broker_restart"):
        if name in rows:
            assert rows[name]["named"] == 0 and rows[name]["covered"] == rows[name]["sent"], rows[name]
    assert "unstored" not in rows["gateway_term"]["named_by_category"]
    assert rows["gateway_kill"]["outages"][0]["signal"] == "SIGKILL"
    assert rows["gateway_term"]["outages"][0]["exit_code"] == 0
    # the race happened: the gateway published into the empty broker before the platform's
    # consumer was back, and sent those batches again for want of the platform's acknowledgement
    resent = re.search(r"; (\d+) batch\(es\) published into the empty broker", rows["broker_restart"]["faults"][0])
    assert resent is not None and int(resent.group(1)) >= 1, rows["broker_restart"]["faults"]
