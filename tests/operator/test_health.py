"""health.py: every replica answers /healthz and /readyz while its loops beat, and 500 naming the
loop that stopped."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from kubetune_operator import health


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_healthy_while_every_loop_beats_and_not_once_one_stops() -> None:
    beats = health.Heartbeats(max_age_seconds=0.5)
    port = free_port()
    server = health.serve("127.0.0.1", port, beats)
    try:
        beats.beat("election")
        beats.beat("event loop")
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ok\n")
        time.sleep(0.7)
        beats.beat("election")  # the election loop goes on; the event loop hangs
        assert get(port, "/healthz") == (500, "stale: event loop\n")
        assert get(port, "/metrics")[0] == 404
    finally:
        server.shutdown()
