"""Local servers that speak the hosted APIs (Storage, OpenAI), so the real clients run."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any


class KillableServer(ThreadingHTTPServer):
    """A threading HTTP server whose ``kill`` also drops its open keep-alive connections, as a
    crashed process would: a client's pooled connection then meets a reset, not an answer."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def kill(self) -> None:
        self.shutdown()
        self.server_close()
        with self._open_lock:
            dropped, self._open = list(self._open), set()
        for conn in dropped:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
