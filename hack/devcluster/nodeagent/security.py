"""A container's identity and filesystem rights, resolved from its pod's securityContext as a kubelet
does: the container's settings win over the pod's.

The "image" here is the project's environment, which runs as root unless told otherwise. So, as on
a real node with a root image, `runAsNonRoot` without a `runAsUser` refuses to start the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .env import ContainerConfigError


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    # Supplementary groups: fsGroup first (it owns the volumes), then supplementalGroups.
    groups: tuple[int, ...]
    read_only_root: bool
    no_new_privileges: bool

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def _setting(pod_context: dict[str, Any], container_context: dict[str, Any], key: str) -> Any:
    value = container_context.get(key)
    return pod_context.get(key) if value is None else value


def fs_group(pod: dict[str, Any]) -> int | None:
    value = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    return None if value is None else int(value)


def identity(pod: dict[str, Any], container: dict[str, Any]) -> Identity:
    """Raises ContainerConfigError where the kubelet would refuse to create the container."""
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    container_context = container.get("securityContext") or {}
    uid = _setting(pod_context, container_context, "runAsUser")
    gid = _setting(pod_context, container_context, "runAsGroup")
    uid = 0 if uid is None else int(uid)
    if _setting(pod_context, container_context, "runAsNonRoot") and uid == 0:
        pod_name = (pod.get("metadata") or {}).get("name")
        raise ContainerConfigError(
            f"container has runAsNonRoot and image will run as root (pod: {pod_name!r}, "
            f"container: {container.get('name')!r})"
        )
    groups = [g for g in (fs_group(pod),) if g is not None]
    groups += [int(g) for g in pod_context.get("supplementalGroups") or [] if int(g) not in groups]
    return Identity(
        uid=uid,
        # A kubelet uses the image user's primary group; the project's environment has none but root's.
        gid=0 if gid is None else int(gid),
        groups=tuple(groups),
        read_only_root=bool(container_context.get("readOnlyRootFilesystem")),
        # allowPrivilegeEscalation defaults to true, as on a real node.
        no_new_privileges=container_context.get("allowPrivilegeEscalation") is False,
    )
