"""Entrypoint: `python -m kubetune_operator` (the chart's command) runs the Kopf operator."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
from typing import Any

import kopf
from kubernetes import client
from prometheus_client import start_http_server

from kubetune_operator import health
from kubetune_operator.handlers import (  # noqa: F401  (registers the handlers)
    finetunejob,
    finetunesweep,
)
from kubetune_operator.health import Heartbeats
from kubetune_operator.runtime import runtime
from kubetune_operator.services.leader import LeaseElector
from kubetune_operator.settings import OperatorSettings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    ours = runtime().settings
    # Our own finalizer and annotation prefix, never Kopf's defaults shared with other operators.
    settings.persistence.finalizer = "kubetune.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubetune.dev", key="last-handled-configuration"
    )
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    # No limit on Kopf's per-object workers (its default): each indexed object's worker waits until
    # every index is filled, so a limit below the number of watched Events or Pods deadlocks startup.
    settings.posting.level = logging.INFO


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = runtime().settings
    beats = Heartbeats()
    health.serve(ours.listen_address, ours.liveness_port, beats)
    if ours.metrics_port:
        # Every replica serves metrics, so a standby is a healthy scrape target (with no job series).
        start_http_server(ours.metrics_port, addr=ours.listen_address)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    identity = socket.gethostname()  # the pod's name
    elector = None
    if ours.leader_election:
        elector = LeaseElector(
            client.CoordinationV1Api(runtime().api),
            ours.lease_namespace,
            ours.lease_name,
            identity,
            on_attempt=lambda: beats.beat("election"),
        )
        if not elector.wait_for_leadership(stopping):
            return  # stopped while standing by
        threading.Thread(target=elector.keep_renewing, args=(stopping,), name="lease", daemon=True).start()
    try:
        asyncio.run(_operate(ours, identity, beats, stopping, elector))
    finally:
        if elector is not None and not elector.lost.is_set():
            elector.release()
    if elector is not None and elector.lost.is_set():
        sys.exit(1)  # another replica may lead now: restart as a standby


async def _operate(
    ours: OperatorSettings,
    identity: str,
    beats: Heartbeats,
    stopping: threading.Event,
    elector: LeaseElector | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop_flag = asyncio.Event()
    # SIGTERM, or a lost Lease, stops Kopf; Kopf's own signal handling is off (it would not see ours).
    for event in (stopping, *((elector.lost,) if elector else ())):
        threading.Thread(
            target=lambda e=event: (e.wait(), loop.call_soon_threadsafe(stop_flag.set)), daemon=True
        ).start()

    async def beat_loop() -> None:
        while True:
            beats.beat("event loop")
            await asyncio.sleep(5)

    beating = asyncio.create_task(beat_loop())
    try:
        await kopf.operator(
            clusterwide=not ours.namespaces,
            namespaces=ours.namespaces,
            standalone=True,
            stop_flag=stop_flag,
            # Kopf's default identity asks the passwd database for the user's name, which an
            # arbitrary non-root uid (Pod Security "restricted", OpenShift) may not have.
            identity=identity,  # type: ignore[arg-type]  # Kopf's Identity: a NewType of str
        )
    finally:
        beating.cancel()


if __name__ == "__main__":
    main()
