"""The transaction map's file (drivers/ocpp/transactions.py): written whole or not at all, also
when the periodic flush's write is still on its thread as the closing flush writes."""

from __future__ import annotations

import threading
from pathlib import Path

from drivers.ocpp.transactions import TransactionStore


def test_overlapping_writes_leave_one_whole_map(tmp_path: Path) -> None:
    store = TransactionStore(tmp_path)
    maps = [TransactionStore.encode({f"CP{n:05d}-{i}": ("1.6", {str(i): f"CP{n:05d}/1"}) for i in range(4000)})
            for n in range(2)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(data: bytes) -> None:
        start.wait()
        try:
            for _ in range(50):
                store.write(data)
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(data,)) for data in maps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert store.path.read_bytes() in maps
    assert len(store.load()) == 4000
    assert not store.path.with_suffix(".tmp").exists()
