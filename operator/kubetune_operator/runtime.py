"""The operator's long-lived objects (API client, settings, services), made once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kubernetes import client, config

from kubetune_operator.services.children import Children
from kubetune_operator.services.reconcile import Reconciler
from kubetune_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Runtime:
    settings: OperatorSettings
    api: client.ApiClient
    reconciler: Reconciler


@cache
def runtime() -> Runtime:
    try:
        config.load_incluster_config()
        api = client.ApiClient()
    except config.ConfigException:
        api = config.new_client_from_config()  # a developer running the operator outside the cluster
    settings = OperatorSettings.from_env()
    return Runtime(settings, api, Reconciler(api, Children(api, settings)))
