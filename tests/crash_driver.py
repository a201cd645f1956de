"""Run the real ``tidal`` flow in this process and SIGKILL it at a chosen point.

``python tests/crash_driver.py <kill_point> <n>`` wraps one piece of real code so that its
``n``-th occurrence ends the process with SIGKILL - no exception, no ``finally``, no flush,
exactly what an OOM kill or a lost machine does - then runs ``flows.ingest.main()``:

* ``listing``: ``LocalSource.list`` dies after yielding ``n`` files;
* ``read``: ``LocalSource.read`` dies on its ``n``-th call, the bytes read but not returned;
* ``embed``: ``OpenAIEmbedder.embed`` dies on its ``n``-th call, after the server answered
  (the vectors were paid for) and before they reach the store;
* ``transaction``: ``psycopg.Cursor.executemany`` dies on its ``n``-th insert into
  ``documents``, after the real statement ran: the file's chunks are inserted, its
  transaction still open, nothing committed;
* ``none``: no kill; the process exits with ``main()``'s code.

Configuration is the environment's (``TIDAL_*``, ``OPENAI_*``, ``PREFECT_API_URL``). When
``CRASH_MARKER`` names a file, a JSON line saying where the kill struck is written and
fsynced there just before it, so the test can check the kill happened where it meant it to.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

KILL_POINTS = ("none", "listing", "read", "embed", "transaction")


def _die(point: str, n: int, **detail: Any) -> None:
    """Leave a note for the test, then SIGKILL this process: nothing after this line runs."""
    marker = os.environ.get("CRASH_MARKER")
    if marker:
        line = json.dumps({"point": point, "n": n, **detail}) + "\n"
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class _Counter:
    """Thread-safe occurrence counter: ``hit()`` is True on exactly the ``n``-th call."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self._lock = threading.Lock()

    def hit(self) -> bool:
        with self._lock:
            self.calls += 1
            return self.calls == self.n


def _arm_listing(n: int) -> None:
    from tidal.sources.local import LocalSource

    real: Callable[..., Iterator[Any]] = LocalSource.list

    def list_then_die(self: LocalSource) -> Iterator[Any]:
        for yielded, file in enumerate(real(self), start=1):
            yield file
            if yielded == n:
                _die("listing", n, yielded=yielded, last=file.path)

    LocalSource.list = list_then_die  # type: ignore[method-assign]


def _arm_read(n: int) -> None:
    from tidal.sources.local import LocalSource

    real = LocalSource.read
    counter = _Counter(n)

    def read_then_die(self: LocalSource, file: Any) -> bytes:
        data = real(self, file)
        if counter.hit():
            _die("read", n, path=file.path, size=len(data))
        return data

    LocalSource.read = read_then_die  # type: ignore[method-assign]


def _arm_embed(n: int) -> None:
    from tidal.embedders.openai import OpenAIEmbedder

    real = OpenAIEmbedder.embed
    counter = _Counter(n)

    def embed_then_die(self: OpenAIEmbedder, texts: Any) -> list[list[float]]:
        vectors = real(self, texts)
        if counter.hit():
            _die("embed", n, texts=len(texts), vectors=len(vectors))
        return vectors

    OpenAIEmbedder.embed = embed_then_die  # type: ignore[method-assign]


def _arm_transaction(n: int) -> None:
    import psycopg
    from psycopg.pq import TransactionStatus

    real = psycopg.Cursor.executemany
    counter = _Counter(n)

    def executemany_then_die(self: psycopg.Cursor[Any], query: Any, params_seq: Any, **kw: Any):
        rows = list(params_seq)
        result = real(self, query, rows, **kw)
        text = query if isinstance(query, str) else repr(query)
        if "insert into documents" in text.lower() and counter.hit():
            conn = self.connection
            in_transaction = conn.info.transaction_status == TransactionStatus.INTRANS
            path = rows[0][4] if rows else None
            visible = None
            if path is not None:  # the rows as this (uncommitted) transaction sees them
                visible = conn.execute(
                    "select count(*) from documents where source_path = %s", (path,)
                ).fetchone()[0]
            _die(
                "transaction",
                n,
                path=path,
                rows=len(rows),
                visible_in_transaction=visible,
                in_transaction=in_transaction,
            )
        return result

    psycopg.Cursor.executemany = executemany_then_die  # type: ignore[method-assign]


ARM = {
    "listing": _arm_listing,
    "read": _arm_read,
    "embed": _arm_embed,
    "transaction": _arm_transaction,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in KILL_POINTS or not argv[1].isdigit() or int(argv[1]) < 1:
        print(f"usage: crash_driver.py {{{','.join(KILL_POINTS)}}} <n >= 1>", file=sys.stderr)
        return 64
    point, n = argv[0], int(argv[1])
    # First, so its environment defaults are set before Prefect is imported.
    from flows.cli import ingest as ingest_main

    if point != "none":
        ARM[point](n)
    # No CLI arguments of its own (``main()`` would otherwise parse this script's).
    sys.argv = [sys.argv[0]]
    return ingest_main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
