"""The multi-node trainer: a JobSet (sigs.k8s.io/jobset) of one Indexed Job, one pod per node.

Why a JobSet: Kueue admits it as one workload (all of its pods or none), and its failure policy
restarts the whole group when any pod is lost, so no survivor waits on a dead peer. The group then
resumes from the last checkpoint, like a single pod does.

The child Job has backoffLimit 0: any pod failure fails it, and the JobSet decides:
- a permanent trainer error (bad data, spec, credentials) fails the JobSet at once;
- a checkpointed stop on SIGTERM, or a disruption (preemption, drain), restarts the group without
  counting;
- anything else (a crash, a SIGKILL, OOM) restarts the group, counted against maxRestarts
  (spec.backoffLimit).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kubetune_api import FineTuneJob
from kubetune_operator.builders import names
from kubetune_operator.builders.jobs import (
    CHECKPOINT_LOST_EXIT_CODE,
    PERMANENT_EXIT_CODES,
    PREEMPTED_EXIT_CODE,
    created_suspended,
    job_spec,
    trainer_command,
)
from kubetune_operator.settings import OperatorSettings

JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_PLURAL = "jobsets"

# The Job controller words a podFailurePolicy failure as "... matching FailJob rule at index N";
# the JobSet rules below tell the child Job's rules apart by that index.
PERMANENT_RULE, CHECKPOINTED_RULE, CHECKPOINT_LOST_RULE, DISRUPTED_RULE = 0, 1, 2, 3


def group_failure_rules(component: str) -> list[client.V1PodFailurePolicyRule]:
    """The child Job's rules, in the order the indexes above name."""

    def exit_codes(values: list[int]) -> client.V1PodFailurePolicyRule:
        return client.V1PodFailurePolicyRule(
            action="FailJob",
            on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
                container_name=component, operator="In", values=values
            ),
        )

    return [
        exit_codes(PERMANENT_EXIT_CODES),
        exit_codes([PREEMPTED_EXIT_CODE]),
        # Before the disruption rule: a lost checkpoint counts even when the pod was evicted.
        exit_codes([CHECKPOINT_LOST_EXIT_CODE]),
        client.V1PodFailurePolicyRule(
            action="FailJob",
            on_pod_conditions=[
                client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
            ],
        ),
    ]


def _rule(name: str, action: str, index: int) -> dict[str, Any]:
    return {
        "name": name,
        "action": action,
        "onJobFailureReasons": ["PodFailurePolicy"],
        "onJobFailureMessagePatterns": [f"matching FailJob rule at index {index}$"],
    }


def trainer_jobset(ftj: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    nodes = ftj.spec.resources.nodes
    spec = job_spec(
        ftj,
        settings,
        component=names.TRAINER,
        command=trainer_command(ftj),
        gpus=ftj.spec.resources.gpus_per_node,
        backoff_limit=0,
        pods=nodes,
        failure_rules=group_failure_rules(names.TRAINER),
    )
    # A Job's deadline restarts with each group restart; the operator enforces the run's deadline
    # (policies/deadline.py), which a JobSet has no field for.
    spec.active_deadline_seconds = None
    pod_spec = spec.template.spec
    assert pod_spec is not None
    # One pod per node: two on one node would share its GPUs' interconnect for nothing.
    pod_spec.affinity = client.V1Affinity(
        pod_anti_affinity=client.V1PodAntiAffinity(
            required_during_scheduling_ignored_during_execution=[
                client.V1PodAffinityTerm(
                    label_selector=client.V1LabelSelector(
                        match_labels={names.JOBSET_NAME_LABEL: names.trainer_job_name(ftj)}
                    ),
                    topology_key="kubernetes.io/hostname",
                )
            ]
        )
    )
    metadata = names.child_metadata(ftj, names.trainer_job_name(ftj), names.TRAINER, queued=True)
    job_template = {
        # The child Jobs carry the FineTuneJob's labels too, so the operator's Job index sees them.
        "metadata": {"labels": names.labels(ftj, names.TRAINER)},
        "spec": client.ApiClient().sanitize_for_serialization(spec),
    }
    body: dict[str, Any] = {
        "apiVersion": f"{JOBSET_GROUP}/{JOBSET_VERSION}",
        "kind": "JobSet",
        "metadata": client.ApiClient().sanitize_for_serialization(metadata),
        "spec": {
            "suspend": created_suspended(ftj),
            # The headless Service <jobset> names pod i of the group <jobset>-trainer-0-i.
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "failurePolicy": {
                "maxRestarts": ftj.spec.backoff_limit,
                "restartStrategy": "Recreate",
                "rules": [
                    _rule("PermanentError", "FailJobSet", PERMANENT_RULE),
                    _rule("Checkpointed", "RestartJobSetAndIgnoreMaxRestarts", CHECKPOINTED_RULE),
                    _rule("CheckpointLost", "RestartJobSet", CHECKPOINT_LOST_RULE),
                    _rule("Disrupted", "RestartJobSetAndIgnoreMaxRestarts", DISRUPTED_RULE),
                ],
            },
            "replicatedJobs": [{"name": names.TRAINER_GROUP, "replicas": 1, "template": job_template}],
        },
    }
    return body
