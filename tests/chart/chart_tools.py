"""Renders and inspects the chart for the chart tests.

helm and kubectl are the local cluster kit's (`support.run`), so their versions match the local cluster.
Rendering needs no cluster; anything given a kubeconfig needs `cluster_env` (the fixture in
tests/conftest.py) and talks to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from support import helm
from support import kubectl as kubectl

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
CRD_NAME = "kubetune.dev_finetunejobs.yaml"
# Every CRD the chart ships (hack/generate-crd writes them all), by file and by object name.
CRD_NAMES = (CRD_NAME, "kubetune.dev_finetunesweeps.yaml")
CRD_OBJECT_NAMES = ["finetunejobs.kubetune.dev", "finetunesweeps.kubetune.dev"]
# The chart's floor (Chart.yaml kubeVersion): rendering for it proves the templates need nothing newer.
# helm template otherwise assumes v1.20, which the chart refuses.
KUBE_VERSION = "1.30.0"


def set_args(values: dict[str, str] | None = None, strings: dict[str, str] | None = None) -> list[str]:
    """--set flags (a value in {braces} is a list, digits a number) and --set-string flags."""
    return [arg for key, value in (values or {}).items() for arg in ("--set", f"{key}={value}")] + [
        arg for key, value in (strings or {}).items() for arg in ("--set-string", f"{key}={value}")
    ]


def template(
    *extra: str,
    release: str = "kt",
    namespace: str = "kubetune-system",
    values: dict[str, str] | None = None,
    strings: dict[str, str] | None = None,
) -> str:
    return helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *set_args(values, strings),
        *extra,
    ).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(**kw: Any) -> list[dict[str, Any]]:
    return documents(template(**kw))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]
