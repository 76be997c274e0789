"""The operator's long-lived objects (API client, settings, services), made once at start-up."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubetune_api import GROUP, PLURAL, VERSION
from kubetune_operator.services.children import Children
from kubetune_operator.services.reconcile import Reconciler
from kubetune_operator.services.status_writer import StatusWriter
from kubetune_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Runtime:
    settings: OperatorSettings
    api: client.ApiClient
    reconciler: Reconciler
    status_writer: StatusWriter
    # One pass at a time per FineTuneJob: the timer and a child's event may fire together, and two
    # passes over the same stale status would both act on it and both post its Events.
    _locks: defaultdict[tuple[str, str], threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock), compare=False, repr=False
    )
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def pass_lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[(namespace, name)]

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get_custom_object(PLURAL, namespace, name)

    def get_custom_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object of ours (kubetune.dev/v1alpha1 `plural`), or None when it is gone."""
        try:
            obj = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj  # type: ignore[return-value]


@cache
def runtime() -> Runtime:
    try:
        config.load_incluster_config()
        api = client.ApiClient()
    except config.ConfigException:
        api = config.new_client_from_config()  # a developer running the operator outside the cluster
    settings = OperatorSettings.from_env()
    status_writer = StatusWriter(client.CustomObjectsApi(api))
    return Runtime(settings, api, Reconciler(Children(api, settings), status_writer), status_writer)
