"""The example manifests, and edits of one, shared by the API and the operator tests.

An edit changes a manifest in place at a dotted path, camelCase as in the manifest ("spec.lora.r").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
TINY = REPO_ROOT / "examples" / "finetunejob-tiny.yaml"

Obj = dict[str, Any]
Edit = Callable[[Obj], None]


@cache
def _load(path: Path) -> Obj:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not one YAML mapping"
    return data


def load(path: Path) -> Obj:
    """A fresh copy of one YAML manifest (each file is read once)."""
    return copy.deepcopy(_load(path))


def set_(path: str, value: Any) -> Edit:
    """An edit that sets a dotted path, creating missing parents."""

    def edit(obj: Obj) -> None:
        *parents, last = path.split(".")
        node = obj
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return edit


def delete(path: str, *, missing_ok: bool = False) -> Edit:
    """An edit that removes a dotted path; its parents must exist, and the field too unless missing_ok."""

    def edit(obj: Obj) -> None:
        *parents, last = path.split(".")
        node = obj
        for p in parents:
            node = node[p]
        if missing_ok:
            node.pop(last, None)
        else:
            del node[last]

    return edit


def all_(*edits: Edit) -> Edit:
    """One edit made of several, applied in order."""

    def edit(obj: Obj) -> None:
        apply(obj, *edits)

    return edit


def apply(obj: Obj, *edits: Edit) -> Obj:
    """Applies the edits in order to obj (in place) and returns it."""
    for edit in edits:
        edit(obj)
    return obj
