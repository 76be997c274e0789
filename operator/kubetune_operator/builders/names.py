"""Fixed child names and the labels that tie children to their FineTuneJob."""

from __future__ import annotations

from kubernetes import client

from kubetune_api import API_VERSION, KIND, FineTuneJob

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


def trainer_service_name(ftj: FineTuneJob) -> str:
    # The pods' subdomain: <job>-<index>.<service>.<namespace>.svc names each trainer pod.
    return trainer_job_name(ftj)


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


def child_metadata(ftj: FineTuneJob, name: str, component: str | None = None) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(
        name=name,
        namespace=ftj.metadata.namespace,
        labels=labels(ftj, component),
        owner_references=[owner_reference(ftj)],
    )
