"""The CLI's connection to the cluster (kubeconfig, context, namespace as kubectl takes them) and the
API's refusals told as a user reads them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kubetune_api import GROUP, PLURAL, VERSION


class CliError(Exception):
    """A failure the CLI reports as one message and an exit code (no traceback)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Exit codes of the CLI; 2 is click's own for a usage error.
EXIT_FAILED = 1  # the FineTuneJob (or sweep) ended Failed
EXIT_API = 3  # the API server refused or could not be reached
EXIT_TIMEOUT = 4  # --wait ran out of time
EXIT_ARTIFACTS = 5  # an artifact is missing or its checksum does not match


@dataclass(frozen=True)
class Target:
    """Where a command acts: kubectl's --kubeconfig, --context and -n/--namespace."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False


class Kube:
    """API clients for one kubeconfig context, and the namespace commands act in."""

    def __init__(self, target: Target) -> None:
        self.target = target
        try:
            self.api = config.new_client_from_config(config_file=target.kubeconfig, context=target.context)
        except (config.ConfigException, FileNotFoundError, OSError) as e:
            raise CliError(f"cannot load kubeconfig: {e}", EXIT_API) from e
        self.namespace = target.namespace or _context_namespace(target)

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def get_job(self, name: str) -> dict[str, Any]:
        return self.get_object(PLURAL, name, "FineTuneJob")

    def list_jobs(self) -> list[dict[str, Any]]:
        return self.list_objects(PLURAL, "FineTuneJobs")

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.create_object(PLURAL, body, "FineTuneJob")

    def get_object(self, plural: str, name: str, kind: str) -> dict[str, Any]:
        """One kubetune.dev object of this namespace."""
        return self.call(
            lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name),
            f"{kind} {self.namespace}/{name}",
        )

    def list_objects(self, plural: str, kinds: str) -> list[dict[str, Any]]:
        """kubetune.dev objects of this namespace, or of every namespace with -A."""
        if self.target.all_namespaces:
            found = self.call(lambda: self.custom.list_cluster_custom_object(GROUP, VERSION, plural), kinds)
        else:
            found = self.call(
                lambda: self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural),
                f"{kinds} in {self.namespace}",
            )
        return list(found.get("items", []))

    def create_object(self, plural: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        return self.call(
            lambda: self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body),
            kind,
        )

    def call(self, request: Any, what: str) -> Any:
        try:
            return request()
        except ApiException as e:
            raise CliError(explain(e, what), EXIT_API) from e
        except HTTPError as e:
            raise CliError(
                f"cannot reach the API server at {self.api.configuration.host}: {e}", EXIT_API
            ) from e


def _context_namespace(target: Target) -> str:
    try:
        contexts, current = config.list_kube_config_contexts(config_file=target.kubeconfig)
    except (config.ConfigException, FileNotFoundError, OSError):
        return "default"
    chosen = (
        next((c for c in contexts if c["name"] == target.context), current) if target.context else current
    )
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def explain(e: ApiException, what: str) -> str:
    """One readable message for an API error: who refused what, and why (the CEL rule's own message
    for a 422)."""
    body = _body(e)
    message = str(body.get("message") or e.reason or "").strip()
    if e.status in (401, 403):
        hint = "check your kubeconfig context and your RBAC (kubectl auth can-i ...)"
        return f"forbidden: {message or what} ({hint})"
    if e.status == 404:
        details = body.get("details") or {}
        if details.get("name"):
            return f"{what} not found"
        return f"{what}: not found (is Kubetune installed? its CRDs come with the Helm chart)"
    if e.status == 409:
        return f"{what} already exists: {message}"
    if e.status == 422:
        causes = (body.get("details") or {}).get("causes") or []
        lines = [f"  {c.get('field', '(object)')}: {c.get('message', '')}" for c in causes]
        return "\n".join([f"invalid {what}:", *lines] if lines else [f"invalid {what}: {message}"])
    return f"{what}: the API server answered {e.status} {e.reason}: {message}"


def _body(e: ApiException) -> dict[str, Any]:
    try:
        parsed = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
