"""Entrypoint: `python -m kubetune_operator` (the chart's command) runs the Kopf operator."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import kopf
from prometheus_client import start_http_server

from kubetune_operator.handlers import finetunejob  # noqa: F401  (registers the handlers)
from kubetune_operator.runtime import runtime


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
    if ours.metrics_port:
        start_http_server(ours.metrics_port, addr=ours.listen_address)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = runtime().settings
    asyncio.run(
        kopf.operator(
            clusterwide=not ours.namespaces,
            namespaces=ours.namespaces,
            liveness_endpoint=f"http://{ours.listen_address}:{ours.liveness_port}/healthz",
            standalone=True,
            # Kopf's default identity asks the passwd database for the user's name, which an
            # arbitrary non-root uid (Pod Security "restricted", OpenShift) may not have.
            identity=socket.gethostname(),  # type: ignore[arg-type]  # Kopf's Identity: a NewType of str
        )
    )


if __name__ == "__main__":
    main()
