"""A SIGTERM whose checkpoint did not upload exits CHECKPOINT_LOST (8), never PREEMPTED (7): the Job
then counts the stop against backoffLimit instead of retrying for free. The upload fails for real: the
trainer reaches the local S3 server through a TCP relay, which the test shuts (as a network partition
would) after the start's write check and before the SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from kubetune_trainer.errors import ExitCode


class Relay(socketserver.ThreadingTCPServer):
    """Forwards TCP connections to `target`; close() cuts the listener and every open connection."""

    daemon_threads = True

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open: list[socket.socket] = []
        super().__init__(("127.0.0.1", 0), _Pipe)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        for sock in list(self.open):
            sock.close()


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        relay: Relay = self.server  # type: ignore[assignment]
        upstream = socket.create_connection(relay.target)
        relay.open += [self.request, upstream]
        back = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
        back.start()
        _copy(self.request, upstream)
        back.join()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(cluster_env: dict[str, str]) -> Iterator[Relay]:
    endpoint = urlparse(cluster_env["AWS_ENDPOINT_URL"])
    server = Relay((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    yield server
    server.close()


def _steps_seen(progress: Path) -> int:
    if not progress.exists():
        return 0
    # Only whole lines: the trainer may be in the middle of appending the last one.
    lines = [json.loads(line) for line in progress.read_text().split("\n")[:-1] if line]
    return max((e.get("step", 0) for e in lines), default=0)


@pytest.mark.cluster
def test_sigterm_with_a_failed_checkpoint_upload_exits_checkpoint_lost(
    tmp_path: Path,
    cluster_env: dict[str, str],
    s3: Any,
    relay: Relay,
    tiny_model_dir: Path,
    make_config: Any,
) -> None:
    bucket = cluster_env["KUBETUNE_S3_BUCKET"]
    output_root = f"s3://{bucket}/trainer-tests/lost-{uuid.uuid4().hex}/run-1"
    training = {"maxSteps": 5000, "saveSteps": 100000, "batchSize": 4, "maxSeqLength": 64}
    config = make_config(str(tiny_model_dir), output_root, training=training)
    (tmp_path / "config.json").write_text(json.dumps(config))
    termination = tmp_path / "termination-log"
    termination.write_text("")
    progress = tmp_path / "progress.jsonl"
    env = {
        **os.environ,
        **{k: str(v) for k, v in cluster_env.items() if k != "KUBECONFIG"},
        "AWS_ENDPOINT_URL": relay.url,
        "KUBETUNE_PROGRESS_INTERVAL": "0",
        "KUBETUNE_TERMINATION_LOG": str(termination),
    }
    command = [sys.executable, "-m", "kubetune_trainer.train", "--config", str(tmp_path / "config.json")]
    trainer = subprocess.Popen(
        [*command, "--workdir", str(tmp_path / "work"), "--progress-file", str(progress)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 300
        while _steps_seen(progress) < 3 and time.monotonic() < deadline:
            assert trainer.poll() is None, "the trainer ended before it was interrupted"
            time.sleep(0.05)
        assert _steps_seen(progress) >= 3
        relay.close()  # the S3 server is out of reach from here on
        trainer.send_signal(signal.SIGTERM)
        code = trainer.wait(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert code == ExitCode.CHECKPOINT_LOST
    message = termination.read_text()
    assert message.startswith("CHECKPOINT_LOST: stopped on SIGTERM at step ")
    assert "did not upload" in message and f"{output_root}/checkpoints/checkpoint-" in message
    assert "S3 endpoint unreachable" in message
    events = [json.loads(line) for line in progress.read_text().splitlines() if line]
    assert not [e for e in events if e.get("kind") == "checkpoint"]  # never reported as stored
    prefix = output_root.removeprefix(f"s3://{bucket}/")
    stored = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    assert stored == []  # the start's write probe went through the relay, and was removed


def test_the_launcher_reports_what_its_stopped_workers_left(tmp_path: Path) -> None:
    """Workers that stopped on SIGTERM write their code into the launcher's marker (cli.run_entrypoint)."""
    from kubetune_trainer.checkpoints import CheckpointLost, Preempted
    from kubetune_trainer.cli import PREEMPTED_MARKER_ENV, run_entrypoint
    from kubetune_trainer.launch import stopped_code

    marker = tmp_path / "marker"
    os.environ[PREEMPTED_MARKER_ENV] = str(marker)
    try:
        for error, code in (
            (Preempted(4), ExitCode.PREEMPTED),
            (CheckpointLost(4, "x"), ExitCode.CHECKPOINT_LOST),
        ):

            def job(error: Exception = error) -> None:
                raise error

            assert run_entrypoint("train", job) == code
            assert stopped_code(marker) == code
    finally:
        del os.environ[PREEMPTED_MARKER_ENV]
    assert not ExitCode.CHECKPOINT_LOST.permanent and ExitCode.CHECKPOINT_LOST != ExitCode.PREEMPTED
