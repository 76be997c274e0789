"""Materialises a pod's volumes as directories on this machine.

The container process later sees each directory at its mountPath through a bind mount in the
pod's private mount namespace (see process.py).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from kubernetes import client

from .fields import field_value
from .security import fs_group
from .sources import Kind, MissingSource, read_data


class VolumeNotReady(Exception):
    """A referenced ConfigMap or Secret does not exist yet; the kubelet retries, and so do we."""


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_items(
    data: dict[str, bytes], items: list[dict[str, Any]] | None, default_mode: int
) -> list[tuple[str, bytes, int]]:
    if not items:
        return [(key, value, default_mode) for key, value in data.items()]
    out = []
    for item in items:
        if item["key"] not in data:
            raise VolumeNotReady(f"key {item['key']!r} not found")
        out.append((item["path"], data[item["key"]], item.get("mode") or default_mode))
    return out


def _source_data(
    core: client.CoreV1Api, kind: Kind, namespace: str, name: str, optional: bool
) -> dict[str, bytes]:
    try:
        return read_data(core, kind, namespace, name, optional)
    except MissingSource as e:
        raise VolumeNotReady(str(e)) from e


def _downward_items(pod: dict[str, Any], items: list[dict[str, Any]], default_mode: int) -> list:
    out = []
    for item in items:
        ref = item.get("fieldRef")
        if ref is None:
            continue  # resourceFieldRef needs a container context; not used by our workloads
        out.append(
            (item["path"], field_value(pod, ref["fieldPath"]).encode(), item.get("mode") or default_mode)
        )
    return out


def _service_account_token(core: client.CoreV1Api, pod: dict[str, Any], source: dict[str, Any]) -> bytes:
    """A real bound token from the TokenRequest API, exactly what a kubelet mounts."""
    meta = pod["metadata"]
    spec: dict[str, Any] = {
        "expirationSeconds": source.get("expirationSeconds") or 3607,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
    }
    if source.get("audience"):
        spec["audiences"] = [source["audience"]]
    response = core.create_namespaced_service_account_token(
        pod["spec"].get("serviceAccountName") or "default",
        meta["namespace"],
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    if response.status is None or not response.status.token:
        raise VolumeNotReady("the TokenRequest API returned no token")
    return response.status.token.encode()


def _projected_files(core: client.CoreV1Api, pod: dict[str, Any], projected: dict[str, Any]) -> list:
    namespace = pod["metadata"]["namespace"]
    mode = projected.get("defaultMode") or 0o644
    files: list[tuple[str, bytes, int]] = []
    for source in projected.get("sources") or []:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            files.append((sat["path"], _service_account_token(core, pod, sat), mode))
        elif "configMap" in source:
            ref = source["configMap"]
            data = _source_data(core, "configmap", namespace, ref["name"], ref.get("optional", False))
            files += _key_items(data, ref.get("items"), mode)
        elif "secret" in source:
            ref = source["secret"]
            data = _source_data(core, "secret", namespace, ref["name"], ref.get("optional", False))
            files += _key_items(data, ref.get("items"), mode)
        elif "downwardAPI" in source:
            files += _downward_items(pod, source["downwardAPI"].get("items") or [], mode)
    return files


def materialise(
    core: client.CoreV1Api, pod: dict[str, Any], volumes_dir: Path, pvc_root: Path
) -> dict[str, Path]:
    """Writes every volume of the pod and returns volume name -> host directory."""
    namespace = pod["metadata"]["namespace"]
    group = fs_group(pod)
    paths: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        target = volumes_dir / name
        files: list[tuple[str, bytes, int]] | None = None
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o777)  # as a kubelet makes it: any user of the pod may write
        elif "hostPath" in volume:
            target = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                target.mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in volume:
            # No storage provisioner here: a claim is a directory that outlives its pods.
            target = pvc_root / namespace / volume["persistentVolumeClaim"]["claimName"]
            target.mkdir(parents=True, exist_ok=True)
        elif "configMap" in volume:
            ref = volume["configMap"]
            data = _source_data(core, "configmap", namespace, ref["name"], ref.get("optional", False))
            files = _key_items(data, ref.get("items"), ref.get("defaultMode") or 0o644)
        elif "secret" in volume:
            ref = volume["secret"]
            data = _source_data(core, "secret", namespace, ref["secretName"], ref.get("optional", False))
            files = _key_items(data, ref.get("items"), ref.get("defaultMode") or 0o644)
        elif "projected" in volume:
            files = _projected_files(core, pod, volume["projected"])
        elif "downwardAPI" in volume:
            ref = volume["downwardAPI"]
            files = _downward_items(pod, ref.get("items") or [], ref.get("defaultMode") or 0o644)
        else:
            raise VolumeNotReady(f"volume {name!r}: this node agent does not support its type")
        if files is not None:
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for rel, content, mode in files:
                _write_file(target / rel, content, mode)
        paths[name] = target
        if group is not None and "hostPath" not in volume:
            give_to_group(target, group)
    return paths


def give_to_group(folder: Path, group: int) -> None:
    """fsGroup, as a kubelet applies it: the group owns every file and may read and write it, and new
    files inherit the group (setgid folders)."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, -1, group, follow_symlinks=False)
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = stat.S_IRGRP | stat.S_IWGRP | ((stat.S_IXGRP | stat.S_ISGID) if path.is_dir() else 0)
        os.chmod(path, mode | extra)
