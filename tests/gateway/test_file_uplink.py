"""Uplink file: JSON Lines (gzip members by default) in the state directory, rotated by size,
oldest files deleted."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from gateway.batch import Batch
from gateway.uplinks.base import UplinkContext
from gateway.uplinks.file import Config, FileUplink
from tests.support.batches import batch_lines


def batch(seq: int, size: int = 1000) -> Batch:
    payload = json.dumps({"seq": seq, "pad": "x" * size}).encode()
    return Batch(seq=seq, kind="windows", payload=payload, records=1)


async def test_rotates_by_size_and_keeps_the_newest_files(tmp_path: Path) -> None:
    config = Config(type="file", name="file", rotate_bytes=4096, keep_files=2, gzip=False)
    uplink = FileUplink(config, UplinkContext("file", gateway_id="g", state_dir=str(tmp_path)))
    await uplink.start()
    for seq in range(1, 21):  # ~1 KB each: four per file
        await uplink.send(batch(seq))
    directory = tmp_path / "batches"
    rotated = sorted(directory.glob("batches-*.jsonl"))
    # four ~1 KB batches fit a 4 KiB file: rotations after 4, 8, 12, 16; the two newest stay
    assert [p.name for p in rotated] == ["batches-3.jsonl", "batches-4.jsonl"]
    assert all(p.stat().st_size <= 4096 for p in directory.iterdir())
    current = [json.loads(line)["seq"] for line in (directory / "batches.jsonl").read_text().splitlines()]
    assert current[-1] == 20
    kept = [json.loads(line)["seq"] for p in rotated for line in p.read_text().splitlines()]
    assert kept + current == list(range(21 - len(kept) - len(current), 21)), "newest kept, in order"


async def test_gzip_file_holds_the_stored_payloads_and_inflates_to_json_lines(tmp_path: Path) -> None:
    config = Config(type="file", name="file", rotate_bytes=4096, keep_files=2)
    uplink = FileUplink(config, UplinkContext("file", gateway_id="g", state_dir=str(tmp_path)))
    await uplink.start()
    rng = random.Random(11)  # seeded: the same compressed sizes, so the same rotations, every run
    payloads = [gzip.compress(json.dumps({"seq": seq, "pad": rng.randbytes(600).hex()}).encode() + b"\n")
                for seq in range(1, 11)]
    for seq, payload in enumerate(payloads, start=1):
        await uplink.send(Batch(seq=seq, kind="windows", payload=payload, records=1))
    directory = tmp_path / "batches"
    rotated = sorted(directory.glob("batches-*.jsonl.gz"))
    # five ~715-byte payloads fit a 4 KiB file: one rotation, after the fifth
    assert [p.name for p in rotated] == ["batches-1.jsonl.gz"]
    assert all(p.stat().st_size <= 4096 for p in directory.iterdir())
    files = [*rotated, directory / "batches.jsonl.gz"]
    assert b"".join(p.read_bytes() for p in files) == b"".join(payloads[-sum(len(batch_lines(p)) for p in files):])
    seqs = [json.loads(line)["seq"] for p in files for line in batch_lines(p)]
    assert seqs == list(range(1, 11))
