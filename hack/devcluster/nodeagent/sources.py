"""Reading the ConfigMaps and Secrets a pod refers to, for volumes and for its environment alike."""

from __future__ import annotations

import base64
from typing import Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

Kind = Literal["configmap", "secret"]


class MissingSource(Exception):
    """A referenced ConfigMap or Secret does not exist (and the reference is not optional)."""


def read_data(
    core: client.CoreV1Api, kind: Kind, namespace: str, name: str, optional: bool
) -> dict[str, bytes]:
    """The object's data as bytes; {} when it is missing and optional."""
    try:
        if kind == "secret":
            secret = core.read_namespaced_secret(name, namespace)
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        cm = core.read_namespaced_config_map(name, namespace)
    except ApiException as e:
        if e.status == 404 and optional:
            return {}
        if e.status == 404:
            raise MissingSource(f'{kind} "{name}" not found') from e
        raise
    data = {k: v.encode() for k, v in (cm.data or {}).items()}
    return data | {k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()}
