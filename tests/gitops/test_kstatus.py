"""What kstatus (sigs.k8s.io/cli-utils, what Flux's health checks and `kpt live status` use) computes
for FineTuneJobs and FineTuneSweeps in each phase, from the real library on statuses as the operator
writes them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitops_tools import FIXTURES, fixture, run_harness

Obj = dict[str, Any]

# Fixture -> (kstatus status, message). The messages are kstatus's choice of what to show: the
# Reconciling or Stalled condition's message, the Ready condition's, or its own words.
CASES = {
    "no-status.yaml": ("Current", "Resource is current"),
    "Pending.yaml": ("InProgress", "waiting for the trainer pods of Job tiny-train"),
    "Queued.yaml": (
        "InProgress",
        "trainer Job tiny-train waiting for Kueue (Pending): queue team-a: couldn't assign flavors to pod "
        "set main: insufficient unused quota for nvidia.com/gpu in flavor gpu, 8 more needed",
    ),
    "Training.yaml": ("InProgress", "trainer Job tiny-train is running"),
    "Training-stale-generation.yaml": (
        "InProgress",
        "FineTuneJob generation is 2, but latest observed generation is 1",
    ),
    "Exporting.yaml": ("InProgress", "export Job tiny-export is running"),
    "Succeeded.yaml": ("Current", "Resource is Ready"),
    "Succeeded-deleting.yaml": ("Terminating", "Resource scheduled for deletion"),
    "Failed.yaml": ("Failed", "trainer failed: exit code 3 (dataset error): row 7: missing field 'tone'"),
    "Failed-invalid-spec.yaml": (
        "Failed",
        "invalid spec: spec.dataset.textTemplate: textTemplate placeholders must name row fields, "
        "e.g. '{text}'",
    ),
    # A suspended job is as its spec asks (Ready=True, reason Suspended): a sync that waits is not held.
    "Suspended.yaml": ("Current", "Resource is Ready"),
    "sweep-no-status.yaml": ("Current", "Resource is current"),
    "sweep-Running.yaml": ("InProgress", "1 of 4 trials done; best tiny-sweep-0 (evalLoss 2.31)"),
    "sweep-Succeeded.yaml": ("Current", "Resource is Ready"),
    "sweep-Failed.yaml": ("Failed", "4 of 4 trials done; none succeeded"),
}


def test_every_fixture_has_a_case() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kstatus(gitops_bin: Path, name: str) -> None:
    path = fixture(name)
    (got,) = run_harness(gitops_bin / "kstatus", str(path))
    status, message = CASES[name]
    object_name = yaml.safe_load(path.read_text())["metadata"]["name"]
    assert got == {"name": object_name, "status": status, "message": message}


def as_list_yaml(items: list[Obj]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})


def as_list_json(items: list[Obj]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def as_documents(items: list[Obj]) -> str:
    return yaml.safe_dump_all(items)


@pytest.mark.parametrize("encode", [as_list_yaml, as_list_json, as_documents])
def test_stdin_takes_what_kubectl_prints(gitops_bin: Path, encode: Callable[[list[Obj]], str]) -> None:
    # `kubectl get ftj -A -o yaml|json | kstatus`: one line per object, in order.
    names = sorted(CASES)
    items = [yaml.safe_load(fixture(n).read_text()) for n in names]
    got = run_harness(gitops_bin / "kstatus", input=encode(items))
    assert [(g["status"], g["message"]) for g in got] == [CASES[n] for n in names]
