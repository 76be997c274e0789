"""Helpers of the end-to-end tests: FineTuneJob manifests and waiting on their status."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devcluster import settings
from support import wait_for

EXAMPLES = settings.REPO_ROOT / "examples"


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def tiny_job(name: str, seeded: dict[str, str], **spec_changes: Any) -> dict[str, Any]:
    """The tiny example with its own output prefix; spec_changes replace top-level spec fields."""
    body = copy.deepcopy(example("finetunejob-tiny.yaml"))
    body["metadata"] = {"name": name}
    body["spec"]["baseModel"]["uri"] = seeded["tiny"]
    body["spec"]["output"]["uri"] = f"s3://{seeded['bucket']}/e2e/{uuid.uuid4().hex[:8]}"
    body["spec"].update(spec_changes)
    return body


def get_ftj(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return custom.get_namespaced_custom_object("kubetune.dev", "v1alpha1", namespace, "finetunejobs", name)


def apply_ftj(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object("kubetune.dev", "v1alpha1", namespace, "finetunejobs", body)


def wait_phase(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    phases: set[str],
    timeout: float,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get_ftj(custom, namespace, name)
        if on_poll:
            on_poll(obj)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    try:
        return wait_for(
            check, timeout, f"FineTuneJob {namespace}/{name} to reach {sorted(phases)}", interval=1
        )
    except AssertionError as e:
        status = get_ftj(custom, namespace, name).get("status") or {}
        raise AssertionError(f"{e}\nstatus: {yaml.safe_dump(status)}") from None


def events_for(core: client.CoreV1Api, namespace: str, name: str) -> list[client.CoreV1Event]:
    return [e for e in core.list_namespaced_event(namespace).items if e.involved_object.name == name]


def events_once(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    ready: Callable[[list[client.CoreV1Event]], bool],
    what: str,
    timeout: float = 30,
) -> list[client.CoreV1Event]:
    """The object's Events once `ready` holds of them. The operator writes the status first and Kopf
    posts the pass's Events after it, in the background: a status already seen does not mean its
    Events are there yet."""

    def check() -> list[client.CoreV1Event] | None:
        found = events_for(core, namespace, name)
        return found if ready(found) else None

    return wait_for(check, timeout, what)


def deleted(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as e:
        return e.status == 404
    return False


class StatusRecorder:
    """Records every status a FineTuneJob goes through (a watch sees each update, polling may not)."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str, name: str) -> None:
        import threading

        self.custom, self.namespace, self.name = custom, namespace, name
        self.statuses: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                "kubetune.dev",
                "v1alpha1",
                self.namespace,
                "finetunejobs",
                field_selector=f"metadata.name={self.name}",
                timeout_seconds=5,
            )
            for event in stream:
                self.statuses.append(event["raw_object"].get("status") or {})
                if self._stop.is_set():
                    return

    def phases(self) -> list[str]:
        return [s["phase"] for s in self.statuses if s.get("phase")]

    def training_steps(self) -> set[int]:
        return {
            s["progress"]["step"]
            for s in self.statuses
            if s.get("phase") == "Training" and (s.get("progress") or {}).get("step") is not None
        }
