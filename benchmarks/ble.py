"""BLE advertisements/s through decode + replay check + dedup, against `struct.unpack` of the
same payload bytes in the same run, subject and baseline interleaved: every round runs the
pipeline, the baseline and each per-format subset in turn, and the best of `--runs` rounds of
each is reported, so a slow stretch of the shared machine hits both sides of the ratio alike.

Input: advertisements of 10 simulated tags per format (RuuviTag 5 and 3, BTHome plain, air and
encrypted, pvvx, atc1441), each measurement advertised 3 times the way tags repeat it, so two
of three advertisements are duplicates, as on air. The baseline unpacks each payload with the
struct layout of its format and does nothing else: it is the floor of "reading the bytes".

    .venv/bin/python -m benchmarks.ble [--measurements 400] [--runs 5]
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Callable

from benchmarks.report import interleaved_best, print_ratio
from drivers.ble.pipeline import AdvertisementPipeline
from simulators.ble.tags import DEFAULT_KEY, FORMATS, make_tags

Advert = tuple[str, dict[int, bytes], dict[str, bytes], int]

# One struct per format over its whole payload (the baseline's "decode").
_BASELINE = {
    "ruuvi5": struct.Struct(">BhHHhhhHBH6s"),
    "ruuvi3": struct.Struct(">BBBBHhhhH"),
    "pvvx": struct.Struct("<6shHHBBB"),
    "atc1441": struct.Struct(">6shBBHB"),
}


def _adverts(measurements: int, per_format: int = 10, repeats: int = 3) -> tuple[list[Advert], list[tuple[struct.Struct, bytes]]]:
    tags = make_tags(per_format, FORMATS)
    adverts: list[Advert] = []
    baseline: list[tuple[struct.Struct, bytes]] = []
    for _ in range(measurements):
        for tag in tags:
            manufacturer, service = tag.advertisement()
            payload = next(iter(manufacturer.values()), b"") or next(iter(service.values()))
            layout = _BASELINE.get(tag.format) or struct.Struct(f"<{len(payload)}B")
            for _ in range(repeats):
                adverts.append((tag.mac, manufacturer, service, -60))
                baseline.append((layout, payload))
            tag.advance()
            tag.counter += 1
    return adverts, baseline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measurements", type=int, default=400, help="measurements per tag")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds; best of them per job")
    args = parser.parse_args(argv)
    adverts, baseline = _adverts(args.measurements)
    # Keys for the encrypted BTHome tags only: a tag with a key accepts nothing but encrypted BTHome.
    keys = {advert[0]: DEFAULT_KEY for advert in adverts if _format_of(advert) == "bthome_enc"}
    emitted = [0]

    def pipeline_run() -> None:
        pipeline = AdvertisementPipeline(bthome_keys=keys)  # fresh dedup/replay state per run
        process = pipeline.process
        n = 0
        ts = 1_700_000_000.0
        for mac, manufacturer, service, rssi in adverts:
            outcome, readings = process(mac, manufacturer, service, rssi, ts)
            n += len(readings)
        emitted[0] = n

    # The baseline is ~10x faster: it goes over the input this many times per measurement, so
    # both sides run for a comparable stretch and a scheduler hiccup weighs on neither alone.
    baseline_passes = 10

    def baseline_run() -> None:
        for _ in range(baseline_passes):
            for layout, payload in baseline:
                layout.unpack(payload)

    count = len(adverts)
    jobs: list[tuple[str, int, Callable[[], object]]] = [
        ("decode+dedup (pipeline)", count, pipeline_run),
        ("struct.unpack baseline", count * baseline_passes, baseline_run),
    ]
    # Per format, to show where the time goes (encrypted BTHome pays for AES-CCM).
    for fmt in FORMATS:
        subset = [a for a in adverts if fmt == _format_of(a)]
        sub_keys = {mac: key for mac, key in keys.items() if any(a[0] == mac for a in subset)}

        def run_subset(subset: list[Advert] = subset, sub_keys: dict[str, bytes] = sub_keys) -> None:
            process = AdvertisementPipeline(bthome_keys=sub_keys).process
            for mac, manufacturer, service, rssi in subset:
                process(mac, manufacturer, service, rssi, 1_700_000_000.0)

        jobs.append((fmt, len(subset), run_subset))
    subject, floor, *per_format = interleaved_best(args.runs, jobs)
    print(f"{count:,} advertisements ({count // 3:,} distinct measurements, {emitted[0]:,} readings emitted), "
          f"{args.runs} interleaved rounds")
    print_ratio("BLE advertisements through decode + dedup", subject, floor, "adv/s")
    for m in per_format:
        print(f"  {m.name:<12} {m.rate:>12,.0f} adv/s")
    return 0


_MAC_FORMAT = {"05": "ruuvi5", "03": "ruuvi3", "B0": "bthome", "B1": "bthome_air", "BE": "bthome_enc",
               "9A": "pvvx", "A7": "atc1441"}


def _format_of(advert: Advert) -> str:
    return _MAC_FORMAT[advert[0].split(":")[4]]


if __name__ == "__main__":
    sys.exit(main())
