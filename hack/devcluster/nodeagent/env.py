"""The environment of a container: env, envFrom, valueFrom and $(VAR) expansion, as a kubelet builds it."""

from __future__ import annotations

import base64
import re
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .fields import field_value

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(Exception):
    """Like the kubelet's CreateContainerConfigError: a referenced key is missing."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: unknown references stay as written, $$ escapes a dollar."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(repl, value)


def _lookup(core: client.CoreV1Api, namespace: str, kind: str, ref: dict[str, Any]) -> str | None:
    name, key, optional = ref["name"], ref["key"], ref.get("optional", False)
    try:
        if kind == "secret":
            data = core.read_namespaced_secret(name, namespace).data or {}
            raw = data.get(key)
            value = base64.b64decode(raw).decode() if raw is not None else None
        else:
            value = (core.read_namespaced_config_map(name, namespace).data or {}).get(key)
    except ApiException as e:
        if e.status == 404 and optional:
            return None
        if e.status == 404:
            raise ContainerConfigError(f'{kind} "{name}" not found') from e
        raise
    if value is None and not optional:
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return value


def _resource_field(container: dict[str, Any], ref: dict[str, Any]) -> str:
    kind, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource, "0")
    return str(value)


def container_env(
    core: client.CoreV1Api, pod: dict[str, Any], container: dict[str, Any], base: dict[str, str]
) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            try:
                data = core.read_namespaced_config_map(ref["name"], namespace).data or {}
            except ApiException as e:
                if e.status == 404 and ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref["name"]}" not found') from e
            env |= {prefix + k: v for k, v in data.items()}
        elif "secretRef" in source:
            ref = source["secretRef"]
            try:
                sdata = core.read_namespaced_secret(ref["name"], namespace).data or {}
            except ApiException as e:
                if e.status == 404 and ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref["name"]}" not found') from e
            env |= {prefix + k: base64.b64decode(v).decode() for k, v in sdata.items()}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "secretKeyRef" in source:
            value = _lookup(core, namespace, "secret", source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = _lookup(core, namespace, "configmap", source["configMapKeyRef"])
        elif "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = _resource_field(container, source["resourceFieldRef"])
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env
