"""The fault table (`make faults`, benchmarks/faults.py) in a bounded form: two faults, short
runs, every loss named."""

from __future__ import annotations

import asyncio
import json
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
