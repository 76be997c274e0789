"""Creates, updates and deletes a FineTuneJob's children, and writes its status."""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubetune_api import FineTuneJob
from kubetune_operator.builders import jobs, names, rbac
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class Children:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.settings = settings

    def create_trainer(self, ftj: FineTuneJob) -> bool:
        """The trainer's identity, its config and its Job. Returns True if the Job was created now."""
        ns = str(ftj.metadata.namespace)
        self._create(lambda: self.core.create_namespaced_service_account(ns, rbac.service_account(ftj)))
        self._create(lambda: self.rbac.create_namespaced_role(ns, rbac.role(ftj)))
        self._create(lambda: self.rbac.create_namespaced_role_binding(ns, rbac.role_binding(ftj)))
        self._create(lambda: self.core.create_namespaced_config_map(ns, jobs.config_map(ftj)))
        if ftj.spec.resources.nodes > 1:
            self._create(lambda: self.core.create_namespaced_service(ns, jobs.trainer_service(ftj)))
        return self._create(
            lambda: self.batch.create_namespaced_job(ns, jobs.trainer_job(ftj, self.settings))
        )

    def create_exporter(self, ftj: FineTuneJob) -> bool:
        ns = str(ftj.metadata.namespace)
        return self._create(lambda: self.batch.create_namespaced_job(ns, jobs.export_job(ftj, self.settings)))

    def set_suspend(self, ftj: FineTuneJob, job_name: str, suspend: bool) -> None:
        self.batch.patch_namespaced_job(job_name, str(ftj.metadata.namespace), {"spec": {"suspend": suspend}})

    def delete_run(self, ftj: FineTuneJob) -> None:
        """Removes the Jobs (and their pods) and config of a previous spec revision."""
        ns = str(ftj.metadata.namespace)
        for job in (names.trainer_job_name(ftj), names.export_job_name(ftj)):
            self._delete(
                lambda job=job: self.batch.delete_namespaced_job(job, ns, propagation_policy="Foreground")
            )
        self._delete(lambda: self.core.delete_namespaced_config_map(names.config_map_name(ftj), ns))
        self._delete(lambda: self.core.delete_namespaced_service(names.trainer_service_name(ftj), ns))

    def delete_finetunejob(self, ftj: FineTuneJob) -> None:
        self._delete(
            lambda: self.custom.delete_namespaced_custom_object(
                "kubetune.dev",
                "v1alpha1",
                str(ftj.metadata.namespace),
                "finetunejobs",
                str(ftj.metadata.name),
            )
        )

    @staticmethod
    def _create(call: Any) -> bool:
        # Fixed names make creation idempotent: 409 means an earlier pass (or operator) made it.
        try:
            call()
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    @staticmethod
    def _delete(call: Any) -> None:
        try:
            call()
        except ApiException as e:
            if e.status != 404:
                raise
