"""Fixed child names and the labels that tie children to their FineTuneJob."""

from __future__ import annotations

from kubernetes import client

from kubetune_api import API_VERSION, KIND, PRIORITY_CLASS_LABEL, QUEUE_NAME_LABEL, FineTuneJob

FINETUNEJOB_LABEL = "kubetune.dev/finetunejob"
RUN_ID_LABEL = "kubetune.dev/run-id"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune-operator"

TRAINER = "trainer"
EXPORTER = "exporter"

CONFIG_KEY = "config.json"
CONFIG_MOUNT = "/etc/kubetune"
CONFIG_PATH = f"{CONFIG_MOUNT}/{CONFIG_KEY}"


def trainer_job_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-train"


# A multi-node trainer is a JobSet named like the single-node trainer Job, with one replicated Job.
TRAINER_GROUP = "trainer"
# Set by the JobSet controller on its Jobs and pods.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_RESTART_LABEL = "jobset.sigs.k8s.io/restart-attempt"


def trainer_group_job_name(ftj: FineTuneJob) -> str:
    """The JobSet's Indexed Job: <jobset>-<replicatedJob>-<index>."""
    return f"{trainer_job_name(ftj)}-{TRAINER_GROUP}-0"


def rendezvous_host(ftj: FineTuneJob) -> str:
    """Pod 0 of the group, named by the JobSet's headless Service (its subdomain: the JobSet's name)."""
    return f"{trainer_group_job_name(ftj)}-0.{trainer_job_name(ftj)}.{ftj.metadata.namespace}.svc"


def export_job_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-export"


def config_map_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-config"


def service_account_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-trainer"


def labels(ftj: FineTuneJob, component: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "kubetune",
        MANAGED_BY_LABEL: MANAGED_BY,
        FINETUNEJOB_LABEL: str(ftj.metadata.name),
        RUN_ID_LABEL: ftj.spec_hash(),
    }
    if component:
        out[COMPONENT_LABEL] = component
    return out


def queue_labels(ftj: FineTuneJob) -> dict[str, str]:
    """Kueue's labels for a queued workload: its LocalQueue and WorkloadPriorityClass."""
    out = {}
    if ftj.queue_name:
        out[QUEUE_NAME_LABEL] = ftj.queue_name
        if ftj.workload_priority_class:
            out[PRIORITY_CLASS_LABEL] = ftj.workload_priority_class
    return out


def owner_reference(ftj: FineTuneJob) -> client.V1OwnerReference:
    """Children are garbage-collected with their FineTuneJob; artifacts in S3 are not."""
    return client.V1OwnerReference(
        api_version=API_VERSION,
        kind=KIND,
        name=str(ftj.metadata.name),
        uid=str(ftj.metadata.uid),
        controller=True,
        block_owner_deletion=True,
    )


def child_metadata(
    ftj: FineTuneJob, name: str, component: str | None = None, queued: bool = False
) -> client.V1ObjectMeta:
    """`queued`: a workload Kueue admits (the trainer and export Jobs or JobSet)."""
    return client.V1ObjectMeta(
        name=name,
        namespace=ftj.metadata.namespace,
        labels=labels(ftj, component) | (queue_labels(ftj) if queued else {}),
        owner_references=[owner_reference(ftj)],
    )
