"""The city's closing screen fits 100 columns and names the chain readings -> windows -> batches
-> file (issue 14: what a person running `make demo` sees)."""

from __future__ import annotations

from simulators.city.report import COLUMNS, chain, fit

SUMMARY = """edge-gateway run summary
  readings in               3,095
  decode errors                17
  windows closed            1,137
  revisions (late)              0
  batches written               7
  forwarded            file: 7 batches / 1163 records
  still in the outbox           0 batches (demo-state/gateway-state/outbox.sqlite)
  output               file: demo-state/gateway-state/batches/batches.jsonl.gz"""


def test_the_chain_names_every_stage_and_where_the_batches_are() -> None:
    text = chain(SUMMARY)
    assert text == ("  chain: 3,095 readings in -> 1,137 windows closed -> 7 batches -> forwarded file: 7 "
                    "batches / 1163 records\n  batches on disk: file: demo-state/gateway-state/batches/batches.jsonl.gz")
    assert chain("no summary here") is None


def test_long_lines_wrap_under_their_first_word() -> None:
    long = "  decode errors: " + ", ".join(f"driver-{i}:bad_mic {i}" for i in range(20))
    lines = fit(["short", long]).splitlines()
    assert lines[0] == "short" and all(len(line) <= COLUMNS for line in lines)
    assert all(line.startswith("    ") for line in lines[2:]) and len(lines) > 3
    assert " ".join(line.strip() for line in lines[1:]) == long.strip()
