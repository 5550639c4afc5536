"""The PostgreSQL journal's order is commit order (storage/postgresql/journal.py): many
writers (threads and processes, each a connection of its own) journal at once, each holding its transaction open a while after its events, while
a reader moves its cursor as the dispatcher does (``events(after_seq=cursor)``). No event is
ever skipped: every committed event is seen exactly once, in seq order. Without the journal
lock a writer's lower seq commits after a higher one the reader has passed, and is lost."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time

from pnbridge.config.tables import StorageConfig
from pnbridge.model import Report
from pnbridge.storage.engines import engine

WRITERS = 8  # threads, each a connection of its own
PROCESSES = 2  # and other processes, as other instances would be
BATCHES = 25

# A writer process: the same batches, each committed event's id printed.
PROCESS = """
import random, sys, time
from pnbridge.config.tables import StorageConfig
from pnbridge.model import Report
from pnbridge.storage.engines import engine
store = engine(StorageConfig(url=sys.argv[1])).open()
rng = random.Random(sys.argv[2])
for batch in range(int(sys.argv[3])):
    calls = [(lambda s, sel=f"p{sys.argv[2]}-b{batch}-{i}": s.register(Report(
        kind="token", selector=sel, username="p", token_calls=sel, appid_calls="a"),
        {}, time.time())) for i in range(rng.randint(1, 4))]
    pause = rng.random() * 0.004
    calls.append(lambda s, pause=pause: time.sleep(pause))
    for result, error in store.run_batch(calls):
        assert error is None, error
        if result is not None:
            print(result.event.id, flush=True)
store.close()
"""


def test_no_event_is_skipped(pg_database_url: str):
    database = engine(StorageConfig(url=pg_database_url))
    database.open().close()  # the schema
    committed: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def write(number: int) -> None:
        store = database.open()
        rng = random.Random(number)
        try:
            for batch in range(BATCHES):
                calls = [
                    (lambda s, sel=f"w{number}-b{batch}-{i}": s.register(
                        Report(kind="token", selector=sel, username=f"u{number}",
                               token_calls=f"t-{sel}", appid_calls="app"), {}, time.time()))
                    for i in range(rng.randint(1, 4))
                ]
                # Held open after its events: what lets another writer commit a later seq
                # first, were the journal not ordered.
                pause = rng.random() * 0.004
                calls.append(lambda s, pause=pause: time.sleep(pause))
                for result, error in store.run_batch(calls):
                    assert error is None, error
                    if result is not None:
                        with lock:
                            committed.append(result.event.id)
        finally:
            store.close()

    seen: list[tuple[int, str]] = []

    def read() -> None:
        store = database.reader()
        cursor = 0
        while True:
            finished = done.is_set()
            events = store.events(after_seq=cursor, limit=7)
            for event in events:
                assert event.seq > cursor
                seen.append((event.seq, event.id))
                cursor = event.seq
            if finished and not events:
                store.close()
                return

    reader = threading.Thread(target=read)
    reader.start()
    processes = [subprocess.Popen([sys.executable, "-c", PROCESS, pg_database_url, str(n),
                                   str(BATCHES)], stdout=subprocess.PIPE, text=True)
                 for n in range(PROCESSES)]
    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        committed += out.split()
    done.set()
    reader.join(60)
    ids = [event_id for _, event_id in seen]
    assert len(committed) > (WRITERS + PROCESSES) * BATCHES
    assert len(ids) == len(set(ids)), "an event seen twice"
    assert sorted(ids) == sorted(committed), (
        f"{len(set(committed) - set(ids))} committed events skipped by the reader")
    assert [seq for seq, _ in seen] == sorted(seq for seq, _ in seen)
