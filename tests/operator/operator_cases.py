"""Shared data of the operator's unit tests: the tiny example as a FineTuneJob, edited per case."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from kubetune_operator.api import FineTuneJob

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
TINY = REPO_ROOT / "examples" / "finetunejob-tiny.yaml"

NAMESPACE = "ml-team"
UID = "0f0e0d0c-0b0a-4908-8706-050403020100"
GENERATION = 3

Obj = dict[str, Any]
Edit = Callable[[Obj], None]


@cache
def _load(path: Path) -> Obj:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not one YAML mapping"
    return data


def load(path: Path) -> Obj:
    return copy.deepcopy(_load(path))


def tiny_obj() -> Obj:
    """The tiny example as the API server hands it over: namespace, uid and generation filled in."""
    obj = load(TINY)
    obj["metadata"].update(namespace=NAMESPACE, uid=UID, generation=GENERATION)
    return obj


def set_(path: str, value: Any) -> Edit:
    """An edit that sets a dotted path (camelCase, as in the manifest), creating parents."""

    def edit(obj: Obj) -> None:
        *parents, last = path.split(".")
        node = obj
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return edit


def delete(path: str) -> Edit:
    def edit(obj: Obj) -> None:
        *parents, last = path.split(".")
        node = obj
        for p in parents:
            node = node[p]
        node.pop(last, None)

    return edit


def tiny(*edits: Edit) -> FineTuneJob:
    obj = tiny_obj()
    for edit in edits:
        edit(obj)
    return FineTuneJob.from_k8s(obj)


def serialize(obj: Any) -> Any:
    """A Kubernetes client object as the API server would receive it (camelCase, no nulls)."""
    return client.ApiClient().sanitize_for_serialization(obj)
