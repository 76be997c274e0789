"""Health probes over loopback HTTP(S), and a poller with a deadline."""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from pathlib import Path


def http_get(
    port: int,
    path: str,
    *,
    tls: bool = False,
    ca_file: Path | None = None,
    client_cert: tuple[Path, Path] | None = None,
    timeout: float = 2.0,
) -> tuple[int, str]:
    """(status, body) of GET http(s)://127.0.0.1:port/path; (0, error) when nothing answers."""
    try:
        if tls:
            ctx = (
                ssl.create_default_context(cafile=str(ca_file))
                if ca_file
                else ssl._create_unverified_context()
            )
            if client_cert:
                ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
