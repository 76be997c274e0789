"""Node definitions, registration and heartbeats (node status + Lease)."""

from __future__ import annotations

import datetime as dt
import logging
import platform
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.36.3"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str = ""
    # Local disk for emptyDirs; trainer and export pods request their workspace from it.
    ephemeral_storage: str = "500Gi"
    labels: dict[str, str] = field(default_factory=dict)
    kubelet_port: int = 0


def default_nodes(kubelet_port_base: int) -> list[NodeSpec]:
    """Two 8-GPU nodes and one CPU node: enough for multi-GPU, multi-node and CPU-only pods."""
    # As on cloud H100 nodes: a few TB of local NVMe for datasets, models and checkpoints.
    gpu = {
        "gpus": 8,
        "gpu_product": "NVIDIA-H100-80GB-HBM3",
        "cpu": "32",
        "memory": "256Gi",
        "ephemeral_storage": "3500Gi",
    }
    return [
        NodeSpec(name="gpu-node-0", kubelet_port=kubelet_port_base, **gpu),
        NodeSpec(name="gpu-node-1", kubelet_port=kubelet_port_base + 1, **gpu),
        NodeSpec(name="cpu-node-0", cpu="16", memory="64Gi", kubelet_port=kubelet_port_base + 2),
    ]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def node_labels(spec: NodeSpec) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubetune.dev/local": "true",
        **spec.labels,
    }
    if spec.gpus:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": spec.gpu_product,
            "nvidia.com/gpu.count": str(spec.gpus),
        }
    return labels


def node_status(spec: NodeSpec) -> dict:
    capacity = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": "110",
        "ephemeral-storage": spec.ephemeral_storage,
    }
    if spec.gpus:
        capacity[GPU_RESOURCE] = str(spec.gpus)
    now = _now().isoformat()

    def condition(type_: str, status: str, reason: str, message: str) -> dict:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
            condition("Ready", "True", "KubeletReady", "kubetune node agent is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": spec.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": spec.kubelet_port}},
        "nodeInfo": {
            "architecture": "amd64",
            "bootID": "",
            "containerRuntimeVersion": "kubetune-nodeagent://0.1.0",
            "kernelVersion": platform.release(),
            "kubeProxyVersion": "",
            "kubeletVersion": KUBELET_VERSION,
            "machineID": spec.name,
            "operatingSystem": "linux",
            "osImage": "kubetune local node (processes, no containers)",
            "systemUUID": spec.name,
        },
    }


def register(core: client.CoreV1Api, spec: NodeSpec) -> None:
    body = {
        "metadata": {"name": spec.name, "labels": node_labels(spec)},
        "spec": {"taints": [GPU_TAINT] if spec.gpus else []},
    }
    try:
        core.create_node({"apiVersion": "v1", "kind": "Node", **body})
        log.info("registered node %s", spec.name)
    except ApiException as e:
        if e.status != 409:
            raise
        core.patch_node(spec.name, body)
    heartbeat_status(core, spec)


def heartbeat_status(core: client.CoreV1Api, spec: NodeSpec) -> None:
    core.patch_node_status(spec.name, {"status": node_status(spec)})


def renew_lease(
    core: client.CoreV1Api, coord: client.CoordinationV1Api, spec: NodeSpec, duration_s: int = 40
) -> None:
    now = _now()
    try:
        lease = coord.read_namespaced_lease(spec.name, "kube-node-lease")
        lease.spec.renew_time = now
        lease.spec.holder_identity = spec.name
        lease.spec.lease_duration_seconds = duration_s
        coord.replace_namespaced_lease(spec.name, "kube-node-lease", lease)
    except ApiException as e:
        if e.status != 404:
            raise
        coord.create_namespaced_lease(
            "kube-node-lease",
            client.V1Lease(
                metadata=client.V1ObjectMeta(
                    name=spec.name,
                    owner_references=[
                        client.V1OwnerReference(
                            api_version="v1",
                            kind="Node",
                            name=spec.name,
                            uid=core.read_node(spec.name).metadata.uid,
                        )
                    ],
                ),
                spec=client.V1LeaseSpec(
                    holder_identity=spec.name, lease_duration_seconds=duration_s, renew_time=now
                ),
            ),
        )
