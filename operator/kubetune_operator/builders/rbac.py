"""The trainer's identity: a ServiceAccount that may patch only its own FineTuneJob's status."""

from __future__ import annotations

from kubernetes import client

from kubetune_api import GROUP, PLURAL, FineTuneJob
from kubetune_operator.builders import names


def service_account(ftj: FineTuneJob) -> client.V1ServiceAccount:
    return client.V1ServiceAccount(
        api_version="v1",
        kind="ServiceAccount",
        metadata=names.child_metadata(ftj, names.service_account_name(ftj)),
    )


def role(ftj: FineTuneJob) -> client.V1Role:
    return client.V1Role(
        api_version="rbac.authorization.k8s.io/v1",
        kind="Role",
        metadata=names.child_metadata(ftj, names.service_account_name(ftj)),
        rules=[
            client.V1PolicyRule(
                api_groups=[GROUP],
                resources=[f"{PLURAL}/status"],
                resource_names=[str(ftj.metadata.name)],
                verbs=["get", "patch"],
            )
        ],
    )


def role_binding(ftj: FineTuneJob) -> client.V1RoleBinding:
    name = names.service_account_name(ftj)
    return client.V1RoleBinding(
        api_version="rbac.authorization.k8s.io/v1",
        kind="RoleBinding",
        metadata=names.child_metadata(ftj, name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=ftj.metadata.namespace)],
    )
