"""The operator's long-lived objects (API client, settings, services), made once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
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

    def get_finetunejob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
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
