"""The kubelet's log endpoint, so `kubectl logs [-f] [--previous] [--tail N]` works.

The apiserver proxies /api/v1/namespaces/NS/pods/P/log to https://<node InternalIP>:<kubelet
port>/containerLogs/NS/P/C; each node gets its own port. The apiserver authenticates with
its kubelet client certificate, which we verify against the cluster CA.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from ..pki import self_signed_cert

if TYPE_CHECKING:
    from .agent import NodeAgent

log = logging.getLogger(__name__)


def _tail(path: Path, lines: int | None) -> bytes:
    data = path.read_bytes()
    if lines is None:
        return data
    kept: deque[bytes] = deque(data.splitlines(keepends=True), maxlen=max(lines, 0))
    return b"".join(kept)


class _Handler(BaseHTTPRequestHandler):
    agent: NodeAgent
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("log endpoint: " + format, *args)

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if url.path in ("/healthz", "/readyz"):
            return self._reply(200, b"ok")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._reply(404, b"not found")
        _, namespace, pod, container = parts
        query = parse_qs(url.query)
        runner = self.agent.runner_by_name(namespace, pod)
        if runner is None:
            return self._reply(404, f"pod {namespace}/{pod} is not on this node".encode())
        previous = query.get("previous", ["false"])[0] == "true"
        path = runner.log_path(container, previous=previous)
        if path is None or not path.exists():
            return self._reply(400, f"no logs for container {container!r}".encode())
        tail = int(query["tailLines"][0]) if "tailLines" in query else None
        if query.get("follow", ["false"])[0] != "true" or previous:
            return self._reply(200, _tail(path, tail))
        self._follow(path, tail, lambda: runner.is_running(container))

    def _follow(self, path: Path, tail: int | None, running: object) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            initial = _tail(path, tail)
            offset = path.stat().st_size
            if initial:
                chunk(initial)
            with open(path, "rb") as f:
                f.seek(offset)
                while True:
                    data = f.read(65536)
                    if data:
                        chunk(data)
                        continue
                    if not running():  # type: ignore[operator]
                        break
                    time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


def serve(agent: NodeAgent, port: int, ca_file: Path, cert_dir: Path, node_name: str) -> ThreadingHTTPServer:
    cert, key = self_signed_cert(cert_dir, node_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    handler = type("Handler", (_Handler,), {"agent": agent})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name=f"logs-{node_name}", daemon=True).start()
    return server
