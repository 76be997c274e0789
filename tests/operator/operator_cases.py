"""Shared data of the operator's unit tests: the tiny example as a FineTuneJob, edited per case."""

from __future__ import annotations

from typing import Any

from kubernetes import client

import spec_edits
from kubetune_api import FineTuneJob
from spec_edits import EXAMPLES as EXAMPLES
from spec_edits import TINY, Edit, Obj, apply, load
from spec_edits import set_ as set_

NAMESPACE = "ml-team"
UID = "0f0e0d0c-0b0a-4908-8706-050403020100"
GENERATION = 3


def tiny_obj() -> Obj:
    """The tiny example as the API server hands it over: namespace, uid and generation filled in."""
    obj = load(TINY)
    obj["metadata"].update(namespace=NAMESPACE, uid=UID, generation=GENERATION)
    return obj


def delete(path: str) -> Edit:
    """An edit that removes a dotted path; a field already absent is left so."""
    return spec_edits.delete(path, missing_ok=True)


def tiny(*edits: Edit) -> FineTuneJob:
    return FineTuneJob.from_k8s(apply(tiny_obj(), *edits))


def serialize(obj: Any) -> Any:
    """A Kubernetes client object as the API server would receive it (camelCase, no nulls)."""
    return client.ApiClient().sanitize_for_serialization(obj)
