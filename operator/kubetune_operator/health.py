"""Liveness and readiness of every replica, leader or standby: each named loop beats, and the replica is
healthy while all of them beat recently. A hung event loop or a stuck election loop stops its beat,
and the kubelet restarts the container."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATHS = ("/healthz", "/readyz")


class Heartbeats:
    def __init__(self, max_age_seconds: float = 30.0) -> None:
        self.max_age = max_age_seconds
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()

    def beat(self, name: str) -> None:
        with self._lock:
            self._beats[name] = time.monotonic()

    def stale(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return sorted(name for name, at in self._beats.items() if now - at > self.max_age)


def serve(address: str, port: int, beats: Heartbeats) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in PATHS:
                self.send_error(404)
                return
            stale = beats.stale()
            body = (f"stale: {', '.join(stale)}\n" if stale else "ok\n").encode()
            self.send_response(500 if stale else 200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the operator's log

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
