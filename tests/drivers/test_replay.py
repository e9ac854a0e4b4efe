"""Driver replay: formats, bad lines named and skipped, pace."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from pathlib import Path

from drivers.replay import Config
from drivers.replay.driver import ReplayDriver
from drivers.replay.records import ReplayDecodeError, iter_records
from gateway.driver import DriverContext
from gateway.model import Reading
from tests.support.wait import async_wait_for


def context(tmp_path: Path, sink: list[Reading]) -> DriverContext:
    return DriverContext("replay", gateway_id="t", state_dir=tmp_path, submit=sink.append, submit_event=lambda e: None)


def test_jsonl_bad_lines_are_named_and_the_rest_plays(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"device":"a","metric":"temperature","value":1.5,"ts":1767225600}\n'
        "not json\n"
        '{"device":"a","metric":"bogus","value":1,"ts":1767225600}\n'
        '{"device":"a","metric":"connector_status","value":"Charging","ts":1767225601}\n'
        '{"device":"a","metric":"temperature","value":"NaN","ts":1767225601}\n'
    )
    items = list(iter_records(str(path)))
    good = [i for i in items if not isinstance(i, ReplayDecodeError)]
    bad = [i for i in items if isinstance(i, ReplayDecodeError)]
    assert good == [("a", "temperature", 1.5, 1767225600.0), ("a", "connector_status", "Charging", 1767225601.0)]
    assert [(e.line, e.cause) for e in bad] == [(2, "bad_json"), (3, "unknown_metric"), (5, "bad_value")]
    assert "line 3" in str(bad[1]) and "bogus" in str(bad[1])


def test_gzipped_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "r.csv.gz"
    path.write_bytes(gzip.compress(b"ts,device,metric,value\n1767225600,b,humidity,55\n1767225601,b,humidity\n"))
    items = list(iter_records(str(path)))
    assert items[0] == ("b", "humidity", 55.0, 1767225600.0)
    assert isinstance(items[1], ReplayDecodeError) and items[1].line == 3 and items[1].cause == "short_row"


async def test_driver_counts_bad_lines_and_keeps_recorded_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"device":"a","metric":"temperature","value":1,"ts":1767225600}\n'
        '{"device":"a","metric":"temperature","value":"x","ts":1767225600.5}\n'
        '{"device":"a","metric":"temperature","value":2,"ts":1767225601}\n'
    )
    sink: list[Reading] = []
    ctx = context(tmp_path, sink)
    driver = ReplayDriver(Config(type="replay", path=str(path), speed=0, timestamps="original"), ctx)
    task = asyncio.create_task(driver.run())
    await async_wait_for(lambda: len(sink) == 2, timeout=5)
    task.cancel()
    assert [r.ts for r in sink] == [1767225600.0, 1767225601.0]
    assert ctx.decode_errors == {"bad_value": 1}


async def test_replayed_timestamps_follow_the_play_clock_at_speed(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(
        f'{{"device":"a","metric":"temperature","value":{i},"ts":{1767225600 + 60 * i}}}\n' for i in range(5)
    ))
    sink: list[Reading] = []
    ctx = context(tmp_path, sink)
    driver = ReplayDriver(Config(type="replay", path=str(path), speed=600.0), ctx)  # 60 s -> 0.1 s
    task = asyncio.create_task(driver.run())
    await async_wait_for(lambda: len(sink) == 5, timeout=5)
    task.cancel()
    gaps = [b.ts - a.ts for a, b in zip(sink, sink[1:], strict=False)]
    assert all(abs(g - 0.1) < 1e-6 for g in gaps), gaps
    assert abs(sink[0].ts - ctx.clock()) < 5


def test_context_refuses_non_finite_values_and_counts_them(tmp_path: Path) -> None:
    sink: list[Reading] = []
    ctx = context(tmp_path, sink)
    ctx.emit(Reading("a", "temperature", float("nan"), 1.0))
    ctx.emit_many([Reading("a", "temperature", float("inf"), 1.0), Reading("a", "temperature", 2.0, 1.0)])
    assert [r.value for r in sink] == [2.0]
    assert ctx.decode_errors == {"non_finite_value": 2} and ctx.readings == 1


def test_invalid_utf8_fails_only_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"device":"\xff\xfe","metric":"bogus","value":1,"ts":1}\n'
                     b'{"device":"a","metric":"temperature","value":1,"ts":1767225600}\n')
    items = list(iter_records(str(path)))
    assert isinstance(items[0], ReplayDecodeError) and items[1] == ("a", "temperature", 1.0, 1767225600.0)


def gz_csv_cut_in_half(path: Path, rows: int) -> int:
    """A gzipped CSV of `rows` readings, cut in the middle of its compressed bytes (a logger's
    upload still being copied); returns how many whole rows the first half holds."""
    text = "ts,device,metric,value\n" + "".join(f"{1767225600 + i},d,humidity,{i % 100}\n" for i in range(rows))
    data = gzip.compress(text.encode(), mtime=0)
    path.write_bytes(data[: len(data) // 2])
    readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[: len(data) // 2])
    return readable.count(b"\n") - 1  # the header line


def test_a_gzip_file_cut_short_plays_its_whole_rows_once_and_names_the_break(tmp_path: Path) -> None:
    path = tmp_path / "upload.csv.gz"
    whole = gz_csv_cut_in_half(path, 2000)
    items = list(iter_records(str(path)))
    rows = [i for i in items if not isinstance(i, ReplayDecodeError)]
    errors = [i for i in items if isinstance(i, ReplayDecodeError)]
    # the row the cut went through never comes out (no newline before the break): no half value
    assert 0 < whole < 2000
    assert [r[3] for r in rows] == [1767225600.0 + i for i in range(whole)]
    assert [(e.cause, e.line) for e in errors] == [("unreadable_file", whole + 2)]
    assert "EOFError" in str(errors[0])


async def test_the_driver_does_not_replay_a_cut_file_again(tmp_path: Path) -> None:
    path = tmp_path / "upload.csv.gz"
    whole = gz_csv_cut_in_half(path, 2000)
    sink: list[Reading] = []
    ctx = context(tmp_path, sink)
    driver = ReplayDriver(Config(type="replay", path=str(path), speed=0, timestamps="original"), ctx)
    task = asyncio.create_task(driver.run())
    try:
        await async_wait_for(lambda: ctx.decode_errors.get("unreadable_file") == 1, timeout=10)
        assert not task.done()  # played once and idles (loop = false): it did not raise
    finally:
        task.cancel()
    assert len(sink) == whole


def test_a_csv_line_over_the_field_limit_is_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("ts,device,metric,value\n1767225600,a,humidity,50\n"
                    f"1767225601,a,humidity,\"{'x' * 200_000}\n"  # an unclosed quote runs past 128 KiB
                    "1767225602,a,humidity,52\n")
    items = list(iter_records(str(path)))
    assert items[0] == ("a", "humidity", 50.0, 1767225600.0)
    assert items[2] == ("a", "humidity", 52.0, 1767225602.0)  # and reading goes on
    assert isinstance(items[1], ReplayDecodeError) and (items[1].cause, items[1].line) == ("bad_line", 3)
    assert len(items) == 3 and "field larger than field limit" in str(items[1])
