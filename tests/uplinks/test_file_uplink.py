"""The file uplink under the runner's pipelining: with `max_in_flight` sends under way at once,
batches land in the files in the order they were sent, each once, across rotations."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from pathlib import Path

from gateway.batch import Batch
from gateway.uplinks.base import UplinkContext
from gateway.uplinks.file import Config
from gateway.uplinks.file.uplink import FileUplink
from tests.support.batches import batch_lines

BATCHES = 120


def batch(seq: int) -> Batch:
    # incompressible filler, so that the 4 KiB files rotate every few batches
    line = json.dumps({"seq": seq, "filler": os.urandom(300).hex()}).encode() + b"\n"
    return Batch(seq=seq, kind="windows", payload=gzip.compress(line), records=1)


def written_seqs(directory: Path) -> list[int]:
    rotated = sorted(directory.glob("batches-*.jsonl.gz"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
    return [json.loads(line)["seq"] for path in [*rotated, directory / "batches.jsonl.gz"]
            for line in batch_lines(path)]


async def test_concurrent_sends_land_in_send_order_once_across_rotations(tmp_path: Path) -> None:
    config = Config(type="file", directory=str(tmp_path / "out"), rotate_bytes=4096, keep_files=1000)
    uplink = FileUplink(config, UplinkContext("file", gateway_id="gw", state_dir=str(tmp_path)))
    await uplink.start()
    # what the runner does with max_in_flight > 1: every send started before the first finishes
    batches = [batch(seq) for seq in range(1, BATCHES + 1)]
    await asyncio.gather(*(uplink.send(b) for b in batches))
    assert written_seqs(tmp_path / "out") == list(range(1, BATCHES + 1))
    # rotations as written in order: a file rotates before the batch that would take it past 4 KiB
    size, rotations = 0, 0
    for b in batches:
        if size and size + len(b.payload) > config.rotate_bytes:
            rotations, size = rotations + 1, 0
        size += len(b.payload)
    assert rotations >= 5
    assert len(list((tmp_path / "out").glob("batches-*.jsonl.gz"))) == rotations


async def test_instances_on_one_folder_never_lose_a_batch_to_a_rotation(tmp_path: Path) -> None:
    """A reload builds a new FileUplink while a cancelled send of the old one may still be
    appending on its thread: appends and rotations of both stay apart, every batch is kept once."""
    config = Config(type="file", directory=str(tmp_path / "out"), rotate_bytes=4096, keep_files=1000)
    uplinks = [FileUplink(config, UplinkContext("file", gateway_id="gw", state_dir=str(tmp_path))) for _ in range(4)]
    await uplinks[0].start()
    sends = 4 * BATCHES
    await asyncio.gather(*(uplinks[seq % 4].send(batch(seq)) for seq in range(1, sends + 1)))
    assert sorted(written_seqs(tmp_path / "out")) == list(range(1, sends + 1))
