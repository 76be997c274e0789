"""spec.dryRun on the local cluster: the CPU-only plan Job instead of the trainer, status.plan filled from
its termination message, and a bad spec failing with the Planned condition's reason."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from e2e_support import apply_ftj, events_once, tiny_job, wait_phase

pytestmark = pytest.mark.cluster


def _no_gpu_jobs(batch: client.BatchV1Api, namespace: str, name: str) -> list[str]:
    """The FineTuneJob's Jobs; asserts that none asks for a GPU."""
    found = batch.list_namespaced_job(namespace, label_selector=f"kubetune.dev/finetunejob={name}").items
    for job in found:
        for container in job.spec.template.spec.containers:
            limits = (container.resources.limits or {}) if container.resources else {}
            assert "nvidia.com/gpu" not in limits, job.metadata.name
    return sorted(j.metadata.name for j in found)


def test_dry_run_plans_without_training(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
) -> None:
    apply_ftj(custom, workspace, tiny_job("plan", s3_seeded, dryRun=True))

    status = wait_phase(custom, workspace, "plan", {"Failed", "Succeeded"}, 180)["status"]

    assert status["phase"] == "Succeeded", status
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert (planned["status"], planned["reason"]) == ("True", "PlanReady")
    plan: dict[str, Any] = status["plan"]
    assert plan["examples"] and plan["tokens"]["max"] > 0 and plan["totalSteps"] > 0
    assert plan["targetModules"] and plan["memory"][0]["spec"] is True
    assert not [p for p in plan.get("problems", []) if p["severity"] == "Error"]
    assert _no_gpu_jobs(batch, workspace, "plan") == ["plan-plan"]
    assert "trainerJobName" not in status and "exportJobName" not in status


def test_dry_run_of_a_bad_spec_says_why(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:
    job = tiny_job("badplan", s3_seeded, dryRun=True)
    job["spec"]["dataset"]["textTemplate"] = "Phrase: {phrase}\nMood: {mood}"
    apply_ftj(custom, workspace, job)

    status = wait_phase(custom, workspace, "badplan", {"Failed", "Succeeded"}, 180)["status"]

    assert status["phase"] == "Failed", status
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    assert (planned["status"], planned["reason"]) == ("False", "MissingField")
    assert "'mood'" in planned["message"]
    assert [p["reason"] for p in status["plan"]["problems"]] == ["MissingField"]

    def is_failed(e: client.CoreV1Event) -> bool:
        return bool(e.type == "Warning" and e.reason == "Failed")

    events = events_once(
        core, workspace, "badplan", lambda ev: any(map(is_failed, ev)), "a Warning Event Failed"
    )
    failed = [e for e in events if is_failed(e)]
    assert "'mood'" in failed[0].message
    assert _no_gpu_jobs(batch, workspace, "badplan") == ["badplan-plan"]
