"""Issue 17: evicted batches are named by their seq, and they explain, per device, only the
readings they covered that the platform does not have; a loss anywhere else stays unexplained."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.batch import SCHEMA_NAME, SCHEMA_VERSION, BatchDocument, WindowRecord, encode_document
from simulators.city.attribution import eviction_losses, read_stored_batches
from simulators.city.fleet import DeviceGroup
from simulators.city.report import BatchBooks, Outages, build_report

A, B = "lora:a", "lora:b"


def test_an_eviction_explains_what_its_windows_covered_beyond_what_arrived() -> None:
    stored = {
        3: [(A, "temperature", 0, 0, 4), (A, "humidity", 0, 0, 4)],
        4: [(A, "temperature", 0, 1, 6), (B, "temperature", 0, 0, 2)],  # a revision of A, and B
        5: [(B, "temperature", 5, 0, 3)],  # evicted, but a later revision arrived
        9: [(A, "temperature", 10, 0, 5)],  # not evicted
    }
    covered = {(A, "temperature", 0): 4, (B, "temperature", 5): 4}  # revision 0 of A arrived
    loss = eviction_losses(stored, [(3, 5), (7, 7)], covered)
    # A temperature: the evicted revision held 6, 4 arrived -> 2 (named by seq 4);
    # A humidity: 4, none arrived (seq 3); B at 0: 2 (seq 4); B at 5: covered by a later revision
    assert loss.by_device == Counter({A: 6, B: 2})
    assert loss.by_seq == {3: {A: 4}, 4: {A: 2, B: 2}}
    assert loss.evicted_seqs == 4 and loss.undescribed_seqs == [7]


def test_the_stored_record_keeps_the_last_line_of_a_seq_and_skips_a_torn_one(tmp_path: Path) -> None:
    log = tmp_path / "stored.jsonl"
    lines = [{"stream": "s", "seq": 1, "windows": [[A, "temperature", 0, 0, 1]]},
             {"stream": "s", "seq": 1, "windows": [[A, "temperature", 0, 0, 3]]}]  # a retried commit
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"stream": "s", "seq": 2, "win')
    assert read_stored_batches(log) == {"s": {1: [(A, "temperature", 0, 0, 3)]}}


class _Sensors(DeviceGroup):
    protocol = "lorawan-udp"

    def __init__(self, sent: dict[str, int]) -> None:
        super().__init__()
        self._sent = Counter(sent)

    def sent(self) -> Counter[str]:
        return self._sent

    def owns(self, device: str) -> bool:
        return device.startswith("lora:")


def _books(counts: dict[str, int]) -> BatchBooks:
    books = BatchBooks()
    windows = [WindowRecord(device=d, metric="temperature", unit="Cel", kind="gauge", start=0, window=5, count=n,
                            min=1.0, max=1.0, mean=1.0, last=1.0) for d, n in counts.items()]
    books.take(encode_document(BatchDocument(schema=SCHEMA_NAME, version=SCHEMA_VERSION, gateway="g", stream="s", seq=1,
                                             batch_id="g:s:1", created=1.0, windows=windows)), time.time())
    return books


def _report(books: BatchBooks, sent: dict[str, int], evicted: dict[int, list[tuple[str, str, int, int, int]]],
            outages: Outages | None = None, withhold: frozenset[str] = frozenset()) -> dict[str, Any]:
    covered = {(d, m, s): w.count for (_g, d, m, s), w in books.ledger.windows.items()}
    loss = eviction_losses(evicted, [(q, q) for q in evicted], covered)
    return build_report(scenario_name="t", scale=1, groups=[_Sensors(sent)], books=books, metrics={},
                        gateway_summary="", extra={}, evictions=loss, outages=outages, withhold=withhold)


def test_a_loss_on_a_device_no_evicted_batch_held_stays_unexplained() -> None:
    """B lost 5 readings no evicted batch covered; A's eviction (10 readings) cannot absorb them
    although the protocol's deficit (15) is within what the gateway counts as evicted."""
    books = _books({A: 10, B: 5})
    report = _report(books, {A: 20, B: 10}, {2: [(A, "temperature", 5, 0, 10)]})
    line = report["protocols"]["lorawan-udp"]
    assert (line["evicted"], line["unexplained"]) == (10, 5)
    assert line["worst_devices"] == {B: 5}
    assert report["dropped"]["evictions"]["by_seq"] == {"2": {A: 10}}


def test_down_time_explains_at_most_what_was_sent_while_down_and_can_be_withheld() -> None:
    books = _books({A: 10, B: 5})
    outages = Outages()
    outages.gateway_down.update({A: 4, B: 9})  # B sent 9 while down but misses only 5
    report = _report(books, {A: 20, B: 10}, {2: [(A, "temperature", 5, 0, 6)]}, outages)
    line = report["protocols"]["lorawan-udp"]
    assert (line["evicted"], line["gateway_down"], line["unexplained"]) == (6, 4 + 5, 0)
    held = _report(books, {A: 20, B: 10}, {2: [(A, "temperature", 5, 0, 6)]}, outages, frozenset({"gateway_down"}))
    line = held["protocols"]["lorawan-udp"]
    assert (line["evicted"], line["gateway_down"], line["unexplained"]) == (6, 0, 9)
    assert held["dropped"]["withheld"] == {"gateway_down": 9}
