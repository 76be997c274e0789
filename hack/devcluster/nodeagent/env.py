"""The environment of a container: env, envFrom, valueFrom and $(VAR) expansion, as a kubelet builds it."""

from __future__ import annotations

import re
from typing import Any

from kubernetes import client

from .fields import field_value
from .sources import Kind, MissingSource, read_data

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


def _source_data(core: client.CoreV1Api, kind: Kind, namespace: str, ref: dict[str, Any]) -> dict[str, bytes]:
    try:
        return read_data(core, kind, namespace, ref["name"], ref.get("optional", False))
    except MissingSource as e:
        raise ContainerConfigError(str(e)) from e


def _lookup(core: client.CoreV1Api, namespace: str, kind: Kind, ref: dict[str, Any]) -> str | None:
    raw = _source_data(core, kind, namespace, ref).get(ref["key"])
    if raw is None and not ref.get("optional", False):
        raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
    return raw.decode() if raw is not None else None


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
        for field, kind in (("configMapRef", "configmap"), ("secretRef", "secret")):
            if field in source:
                data = _source_data(core, kind, namespace, source[field])
                env |= {prefix + k: v.decode() for k, v in data.items()}
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
