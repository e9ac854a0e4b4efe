"""docs/metrics.md lists every catalog metric with its unit and kind, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.model import CATALOG

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \| `(?P<unit>[^`]+)` \| (?P<kind>gauge|counter|state) \| (?P<who>.+) \|$")


def test_the_metrics_table_matches_the_catalog_row_for_row() -> None:
    rows = [m for line in DOC.read_text(encoding="utf-8").splitlines() if (m := ROW.match(line))]
    assert [r["name"] for r in rows] == list(CATALOG)  # same names, same order, no duplicates
    for r in rows:
        row = CATALOG[r["name"]]
        assert (r["unit"], r["kind"]) == (row.unit, row.kind.name.lower()), r["name"]
        assert r["who"].strip(), r["name"]  # every row says which devices produce it
