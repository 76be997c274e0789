"""Each pod's /etc/hosts: its own names, and the pod hostnames of headless Services (cluster DNS).

On a real cluster, cluster DNS answers `<hostname>.<subdomain>.<ns>.svc.cluster.local` for a pod
whose `spec.hostname`/`spec.subdomain` match a headless Service of its namespace that selects it,
while the pod is ready (any time with `publishNotReadyAddresses`), and the pod's resolv.conf search
path (`<ns>.svc.cluster.local svc.cluster.local cluster.local`) makes the shorter forms work. Here
there is no DNS server, and no EndpointSlices either (the API rejects loopback pod IPs), so the agent
joins Services and pods itself as the EndpointSlice controller would, writes the names into each
pod's hosts file and rewrites it when they change. The file is bind-mounted over /etc/hosts in the
pod's mount namespace, so it is rewritten in place (same inode): a renamed file would not be seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class HeadlessService:
    selector: tuple[tuple[str, str], ...]
    publish_not_ready: bool


@dataclass(frozen=True)
class NamedPod:
    """What decides whether (and where) a pod with a hostname and a subdomain is published."""

    namespace: str
    hostname: str
    subdomain: str
    labels: tuple[tuple[str, str], ...]
    ip: str
    ready: bool
    terminating: bool


def headless_service(service: dict[str, Any]) -> HeadlessService | None:
    spec = service.get("spec") or {}
    if spec.get("clusterIP") != "None":
        return None
    selector = tuple(sorted((spec.get("selector") or {}).items()))
    return HeadlessService(selector, bool(spec.get("publishNotReadyAddresses")))


def named_pod(pod: dict[str, Any]) -> NamedPod | None:
    """The pod as a candidate DNS record, or None if it can have none (as the EndpointSlice
    controller sees it: no hostname or subdomain, no IP yet, or finished)."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if not (spec.get("hostname") and spec.get("subdomain") and ip):
        return None
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return NamedPod(
        namespace=meta["namespace"],
        hostname=spec["hostname"],
        subdomain=spec["subdomain"],
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        ip=ip,
        ready=ready,
        terminating=meta.get("deletionTimestamp") is not None,
    )


@dataclass(frozen=True, order=True)
class PeerRecord:
    """One DNS record of a headless Service: `<hostname>.<service>.<namespace>.svc...` → ip."""

    namespace: str
    service: str
    hostname: str
    ip: str

    def names(self, reader_namespace: str) -> list[str]:
        """The names that resolve to this pod from a pod in reader_namespace."""
        base = f"{self.hostname}.{self.service}.{self.namespace}"
        names = [f"{base}.svc.{CLUSTER_DOMAIN}", f"{base}.svc", base]
        if reader_namespace == self.namespace:
            names.append(f"{self.hostname}.{self.service}")  # the `<ns>.svc.cluster.local` search domain
        return names


def records(
    services: Mapping[tuple[str, str], HeadlessService], pods: Iterable[NamedPod]
) -> list[PeerRecord]:
    """The records cluster DNS would serve: a pod selected by the headless Service named after its
    subdomain, while ready (an endpoint that is not ready is not published)."""
    found = []
    for pod in pods:
        service = services.get((pod.namespace, pod.subdomain))
        # A Service without a selector has no endpoints from the controller, hence no pod records.
        if service is None or not service.selector or not set(service.selector) <= set(pod.labels):
            continue
        if service.publish_not_ready or (pod.ready and not pod.terminating):
            found.append(PeerRecord(pod.namespace, pod.subdomain, pod.hostname, pod.ip))
    return sorted(set(found))


def render(pod_ip: str, own_names: list[str], namespace: str, peers: Iterable[PeerRecord]) -> str:
    """A pod's hosts file: localhost, the pod's own names, then the headless Service peers."""
    lines = [
        "# Kubernetes-managed hosts file (kubetune node agent).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost",
        f"{pod_ip}\t{' '.join(own_names)}",
    ]
    taken = set(own_names) | {"localhost"}
    for record in sorted(set(peers)):
        names = [n for n in record.names(namespace) if n not in taken]
        if names:
            taken.update(names)
            lines.append(f"{record.ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def write_in_place(path: Path, text: str) -> bool:
    """Writes text to path keeping its inode (it may be bind-mounted); True if it changed."""
    data = text.encode()
    path.touch(mode=0o644, exist_ok=True)
    with path.open("r+b") as f:
        if f.read() == data:
            return False
        f.seek(0)
        f.write(data)
        f.truncate()
    return True
