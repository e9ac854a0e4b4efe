"""LoRaWAN concentrator path: frames/s through parse + session lookup + MIC (AES-CMAC) + frame
counter + FRMPayload decryption + codec + Reading objects, against a baseline of AES alone
(one AES-ECB call per frame over the same bytes, padded to the block size) in the same run.

    .venv/bin/python -m benchmarks.lorawan [--frames N] [--runs R]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.report import best_of, print_ratio
from drivers.lorawan import concentrator, phy
from drivers.lorawan.decode import payload_readings
from drivers.lorawan.sessions import Session, SessionStore
from simulators.lorawan.sensors import make_fleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lorawan", description=__doc__)
    parser.add_argument("--frames", type=int, default=20_000, help="frames per run")
    parser.add_argument("--runs", type=int, default=3, help="runs; the fastest counts")
    args = parser.parse_args(argv)

    fleet = make_fleet(20, otaa_every=0, seed=11)  # 100 ABP sensors, 5 codec families
    frames: list[bytes] = []
    while len(frames) < args.frames:
        for sensor in fleet:
            frames.append(sensor.next_frame()[0])
    frames = frames[: args.frames]
    codec_of = {s.eui_hex: s.family for s in fleet}

    def fresh_store() -> SessionStore:
        store = SessionStore(Path("/nonexistent/benchmark-never-written.json"))
        for s in fleet:
            store.put(Session(dev_eui=s.eui_hex, dev_addr=s.dev_addr, nwk_skey=s.nwk_skey.hex(),
                              app_skey=s.app_skey.hex(), activation="abp"))
        return store

    def pipeline() -> int:
        store = fresh_store()
        readings = 0
        for raw in frames:
            up = concentrator.open_data_frame(raw, store)
            readings += len(payload_readings(up.dev_eui, codec_of[up.dev_eui], up.payload, up.fport,
                                             1.7e9, -80.0, 7.0))
        return readings

    key = fleet[0].app_skey
    padded = [raw + bytes(-len(raw) % 16) for raw in frames]

    def aes_only() -> None:
        for block in padded:
            phy.aes_ecb_encrypt(key, block)

    readings = pipeline()  # warm-up and a correctness check
    assert readings >= len(frames) * 4, readings
    subject = best_of(args.runs, "parse+MIC+decrypt+codec", len(frames), pipeline)
    baseline = best_of(args.runs, "AES-ECB alone, same bytes", len(frames), aes_only)
    print(f"{len(frames):,} frames from {len(fleet)} ABP sensors, {readings / len(frames):.1f} readings per frame")
    print_ratio("LoRaWAN uplink path (frames/s)", subject, baseline, "frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
