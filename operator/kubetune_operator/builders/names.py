"""Fixed child names and the labels that tie children to their FineTuneJob."""

from __future__ import annotations

from kubernetes import client

from kubetune_api import API_VERSION, KIND, PRIORITY_CLASS_LABEL, QUEUE_NAME_LABEL, FineTuneJob

# Re-exported: the operator's modules name the labels through this module.
from kubetune_api.labels import (
    COMPONENT_LABEL as COMPONENT_LABEL,
)
from kubetune_api.labels import (
    EXPORTER as EXPORTER,
)
from kubetune_api.labels import (
    FINETUNEJOB_LABEL as FINETUNEJOB_LABEL,
)
from kubetune_api.labels import (
    JOBSET_NAME_LABEL as JOBSET_NAME_LABEL,
)
from kubetune_api.labels import (
    JOBSET_RESTART_LABEL as JOBSET_RESTART_LABEL,
)
from kubetune_api.labels import (
    MANAGED_BY as MANAGED_BY,
)
from kubetune_api.labels import (
    MANAGED_BY_LABEL as MANAGED_BY_LABEL,
)
from kubetune_api.labels import (
    PLANNER as PLANNER,
)
from kubetune_api.labels import (
    RUN_ID_LABEL as RUN_ID_LABEL,
)
from kubetune_api.labels import (
    TRAINER as TRAINER,
)

CONFIG_KEY = "config.json"
CONFIG_MOUNT = "/etc/kubetune"
CONFIG_PATH = f"{CONFIG_MOUNT}/{CONFIG_KEY}"


def trainer_job_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-train"


# A multi-node trainer is a JobSet named like the single-node trainer Job, with one replicated Job.
TRAINER_GROUP = "trainer"


def trainer_group_job_name(ftj: FineTuneJob) -> str:
    """The JobSet's Indexed Job: <jobset>-<replicatedJob>-<index>."""
    return f"{trainer_job_name(ftj)}-{TRAINER_GROUP}-0"


def rendezvous_host(ftj: FineTuneJob) -> str:
    """Pod 0 of the group, named by the JobSet's headless Service (its subdomain: the JobSet's name)."""
    return f"{trainer_group_job_name(ftj)}-0.{trainer_job_name(ftj)}.{ftj.metadata.namespace}.svc"


def export_job_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-export"


def plan_job_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-plan"


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
