"""Shared data of the builder tests: the builders by name, the operator settings they get, and
accessors into a built (serialized) Job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from operator_cases import Edit, serialize, set_, tiny

from kubetune_api import FineTuneJob
from kubetune_operator.builders import jobs, jobset, rbac
from kubetune_operator.settings import OperatorSettings
from spec_edits import apply

SETTINGS = OperatorSettings(trainer_image="registry.example/kubetune:test")

GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
CREDENTIAL_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}

Builder = Callable[[FineTuneJob], Any]
JOB_BUILDERS: dict[str, Callable[[FineTuneJob, OperatorSettings], Any]] = {
    "trainer": jobs.trainer_job,
    "exporter": jobs.export_job,
}
BUILDERS: dict[str, Builder] = {
    "trainer-job": lambda f: jobs.trainer_job(f, SETTINGS),
    "export-job": lambda f: jobs.export_job(f, SETTINGS),
    # spec.dryRun: the CPU-only plan Job (test_policy_dry_run.py: also for a spec that asks for GPUs).
    "plan-job": lambda f: jobs.plan_job(f, SETTINGS),
    # Two nodes of two GPUs, queued with a priority: the multi-node trainer as Kueue gets it.
    "trainer-jobset": lambda f: jobset.trainer_jobset(queued_multi_node(f), SETTINGS),
    "configmap": jobs.config_map,
    "serviceaccount": rbac.service_account,
    "role": rbac.role,
    "rolebinding": rbac.role_binding,
}


MULTI_NODE_QUEUED = (
    set_("spec.resources.nodes", 2),
    set_("spec.resources.gpusPerNode", 2),
    set_("spec.queueName", "team-a"),
    set_("spec.workloadPriorityClassName", "high"),
)


GPU_DRY_RUN = (
    set_("spec.dryRun", True),
    set_("spec.resources.gpusPerNode", 2),
    set_("spec.resources.nodeSelector", {"pool": "h100"}),
    set_("spec.resources.tolerations", [{"key": "pool", "operator": "Exists", "effect": "NoSchedule"}]),
)


def gpu_dry_run(ftj: FineTuneJob) -> FineTuneJob:
    return FineTuneJob.from_k8s(apply(ftj.model_dump(mode="json", by_alias=True), *GPU_DRY_RUN))


def queued_multi_node(ftj: FineTuneJob) -> FineTuneJob:
    return FineTuneJob.from_k8s(apply(ftj.model_dump(mode="json", by_alias=True), *MULTI_NODE_QUEUED))


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(job)["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = container(job)["env"]
    by_name = {e["name"]: e for e in entries}
    assert len(by_name) == len(entries), "duplicate env names"
    return by_name


def build(kind: str, *edits: Edit, settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    result: dict[str, Any] = serialize(JOB_BUILDERS[kind](tiny(*edits), settings))
    return result
