"""Pod Security "restricted", judged by the apiserver's built-in PodSecurity admission: every pod the
operator builds is admitted in a namespace that enforces it, and that namespace does refuse others."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e_support import tiny_job
from kubetune_api import FineTuneJob
from kubetune_operator.builders import jobs, jobset, rbac
from kubetune_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster

SETTINGS = OperatorSettings(trainer_image="ghcr.io/kubetune/kubetune-trainer:dev")


def finetunejob(
    core: client.CoreV1Api, namespace: str, seeded: dict[str, str], **resources: Any
) -> FineTuneJob:
    """The model of a FineTuneJob, with the ServiceAccount its pods name."""
    body = tiny_job("restricted", seeded)
    body["metadata"] = {"name": "restricted", "namespace": namespace, "uid": str(uuid.uuid4())}
    body["spec"]["resources"].update(resources)
    ftj = FineTuneJob.from_k8s(body)
    account = rbac.service_account(ftj)
    account.metadata.owner_references = None  # no FineTuneJob object: the collector would delete it
    try:
        core.create_namespaced_service_account(namespace, account)
    except ApiException as e:
        if e.status != 409:
            raise
    return ftj


def plain(obj: Any) -> Any:
    return client.ApiClient().sanitize_for_serialization(obj)


def pod_templates(ftj: FineTuneJob, multi_node: FineTuneJob) -> dict[str, dict[str, Any]]:
    job_set = plain(jobset.trainer_jobset(multi_node, SETTINGS))
    return {
        "trainer": plain(jobs.trainer_job(ftj, SETTINGS))["spec"]["template"],
        "exporter": plain(jobs.export_job(ftj, SETTINGS))["spec"]["template"],
        "multi-node-trainer": job_set["spec"]["replicatedJobs"][0]["template"]["spec"]["template"],
    }


def dry_run_pod(core: client.CoreV1Api, namespace: str, name: str, template: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}
    core.create_namespaced_pod(namespace, pod, dry_run="All")


def test_every_pod_the_operator_builds_is_admitted_where_restricted_is_enforced(
    core: client.CoreV1Api, workspace: str, s3_seeded: dict[str, str]
) -> None:
    labels = core.read_namespace(workspace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    ftj = finetunejob(core, workspace, s3_seeded)
    multi_node = finetunejob(core, workspace, s3_seeded, nodes=2, gpusPerNode=2)
    for component, template in pod_templates(ftj, multi_node).items():
        dry_run_pod(core, workspace, component, template)  # raises 403 if refused


def test_the_namespace_refuses_a_pod_without_a_security_context(
    core: client.CoreV1Api, workspace: str, s3_seeded: dict[str, str]
) -> None:
    ftj = finetunejob(core, workspace, s3_seeded)
    template = pod_templates(ftj, ftj)["trainer"]
    del template["spec"]["securityContext"]
    del template["spec"]["containers"][0]["securityContext"]
    with pytest.raises(ApiException) as refused:
        dry_run_pod(core, workspace, "bare", template)
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(refused.value.body)["message"]
