"""Reads the kustomize components upstream controllers ship (`config/components/{crd,webhook}`): their
resources with the patches their kustomization.yaml lists. Only what Kueue's and JobSet's use is
supported (strategic merge patches of webhooks, JSON patches, CRD conversion patches); anything else
raises, so an upgrade that needs more is noticed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
# libyaml's loader reads the CRDs (Kueue's Workload alone is 19,000 lines) ten times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_LOADER)


def _kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = load(directory / "kustomization.yaml")
    return data


def crds(directory: Path, conversion_client: dict[str, str]) -> list[dict[str, Any]]:
    """The CRDs of a `crd` component. Where a patch turns on a conversion webhook and the CRD serves more
    than one version, the webhook is called with `conversion_client` (a webhook clientConfig); CA
    injection patches are cert-manager's business and skipped."""
    kustomization = _kustomization(directory)
    converted = set()
    for patch in kustomization.get("patches") or []:
        doc = load(directory / patch["path"])
        if doc.get("spec", {}).get("conversion", {}).get("strategy") == "Webhook":
            converted.add(doc["metadata"]["name"])
    docs = []
    for resource in kustomization["resources"]:
        crd = load(directory / resource)
        if crd["metadata"]["name"] in converted and len(crd["spec"]["versions"]) > 1:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {"clientConfig": dict(conversion_client), "conversionReviewVersions": ["v1"]},
            }
        docs.append(crd)
    return docs


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> None:
    """The RFC 6902 operations kustomize patches use here: add, replace and remove."""
    for op in ops:
        *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        target = doc
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        key: Any = int(last) if isinstance(target, list) and last != "-" else last
        if op["op"] == "replace":
            target[key] = op["value"]
        elif op["op"] == "remove":
            del target[key]
        elif op["op"] == "add" and isinstance(target, list):
            target.insert(len(target) if key == "-" else key, op["value"])
        elif op["op"] == "add":
            target[key] = op["value"]
        else:
            raise ValueError(f"unsupported JSON patch operation {op['op']!r}")


def _patch_webhooks(configs: dict[str, dict[str, Any]], directory: Path, patch: dict[str, Any]) -> None:
    if "patch" in patch:
        # A strategic merge patch; webhooks merge by name, and the fields patched here are replaced whole.
        doc = yaml.safe_load(patch["patch"])
        by_name = {w["name"]: w for w in configs[doc["kind"]]["webhooks"]}
        for hook in doc.get("webhooks", []):
            by_name[hook["name"]].update(hook)
        return
    ops = load(directory / patch["path"])
    if not isinstance(ops, list):
        raise ValueError(f"{directory / patch['path']}: only JSON patches are supported")
    json_patch(configs[patch["target"]["kind"]], ops)


def webhook_configurations(
    directory: Path, client_config: Callable[[str], dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """A `webhook` component's configurations by kind, patched, each webhook's `clientConfig.service`
    replaced by client_config(its path)."""
    kustomization = _kustomization(directory)
    configs: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in yaml.load_all((directory / resource).read_text(), Loader=_LOADER):
            if doc and doc.get("kind") in WEBHOOK_KINDS:
                configs[doc["kind"]] = doc
    for patch in kustomization.get("patches") or []:
        _patch_webhooks(configs, directory, patch)
    for doc in configs.values():
        for hook in doc["webhooks"]:
            hook["clientConfig"] = client_config(hook["clientConfig"]["service"]["path"])
    return configs
