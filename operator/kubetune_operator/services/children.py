"""Creates, updates and deletes a FineTuneJob's children, and writes its status."""

from __future__ import annotations

import logging
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubetune_api import FineTuneJob
from kubetune_operator.builders import jobs, jobset, names, rbac
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
API_CHECK_SECONDS = 60.0


def api_served(api: client.ApiClient, group: str, version: str, plural: str) -> bool:
    """Discovery: does the API server serve `plural` in group/version?"""
    try:
        resources = client.CustomObjectsApi(api).get_api_resources(group, version)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return any(r.name == plural for r in resources.resources)


class Children:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.api = api
        self.settings = settings
        self._jobset_checked: tuple[float, bool] | None = None

    def create_trainer(self, ftj: FineTuneJob, active_deadline_seconds: int | None = None) -> bool:
        """The trainer's identity, its config and its Job (a JobSet for nodes > 1). Returns True if
        the trainer was created now."""
        ns = str(ftj.metadata.namespace)
        self._create(lambda: self.core.create_namespaced_service_account(ns, rbac.service_account(ftj)))
        self._create(lambda: self.rbac.create_namespaced_role(ns, rbac.role(ftj)))
        self._create(lambda: self.rbac.create_namespaced_role_binding(ns, rbac.role_binding(ftj)))
        self._create(lambda: self.core.create_namespaced_config_map(ns, jobs.config_map(ftj)))
        if ftj.spec.resources.nodes > 1:
            body = jobset.trainer_jobset(ftj, self.settings)
            return self._create(
                lambda: self.custom.create_namespaced_custom_object(
                    jobset.JOBSET_GROUP, jobset.JOBSET_VERSION, ns, jobset.JOBSET_PLURAL, body
                )
            )
        job = jobs.trainer_job(ftj, self.settings, active_deadline_seconds)
        return self._create(lambda: self.batch.create_namespaced_job(ns, job))

    def create_planner(self, ftj: FineTuneJob) -> bool:
        """The dry run's identity, config and CPU-only plan Job. Returns True if it was created now."""
        ns = str(ftj.metadata.namespace)
        self._create(lambda: self.core.create_namespaced_service_account(ns, rbac.service_account(ftj)))
        self._create(lambda: self.core.create_namespaced_config_map(ns, jobs.config_map(ftj)))
        job = jobs.plan_job(ftj, self.settings)
        return self._create(lambda: self.batch.create_namespaced_job(ns, job))

    def create_exporter(self, ftj: FineTuneJob, active_deadline_seconds: int | None = None) -> bool:
        ns = str(ftj.metadata.namespace)
        job = jobs.export_job(ftj, self.settings, active_deadline_seconds)
        return self._create(lambda: self.batch.create_namespaced_job(ns, job))

    def set_suspend(self, ftj: FineTuneJob, job_name: str, suspend: bool) -> None:
        if job_name == names.trainer_job_name(ftj) and ftj.spec.resources.nodes > 1:
            self.custom.patch_namespaced_custom_object(
                jobset.JOBSET_GROUP,
                jobset.JOBSET_VERSION,
                str(ftj.metadata.namespace),
                jobset.JOBSET_PLURAL,
                job_name,
                {"spec": {"suspend": suspend}},
            )
            return
        self.batch.patch_namespaced_job(job_name, str(ftj.metadata.namespace), {"spec": {"suspend": suspend}})

    def patch_job(self, ftj: FineTuneJob, job_name: str, patch: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job(job_name, str(ftj.metadata.namespace), patch)

    def patch_child(self, ftj: FineTuneJob, kind: str, name: str, patch: dict[str, Any]) -> None:
        if kind != "JobSet":
            self.patch_job(ftj, name, patch)
            return
        self.custom.patch_namespaced_custom_object(
            jobset.JOBSET_GROUP,
            jobset.JOBSET_VERSION,
            str(ftj.metadata.namespace),
            jobset.JOBSET_PLURAL,
            name,
            patch,
        )

    def set_workload_active(self, ftj: FineTuneJob, workload: str, active: bool) -> None:
        """Kueue's own switch for a queued workload: inactive means evicted and kept suspended."""
        self.custom.patch_namespaced_custom_object(
            KUEUE_GROUP,
            KUEUE_VERSION,
            str(ftj.metadata.namespace),
            "workloads",
            workload,
            {"spec": {"active": active}},
        )

    def delete_child(self, ftj: FineTuneJob, kind: str, name: str) -> None:
        ns = str(ftj.metadata.namespace)
        if kind == "JobSet":
            self._delete(
                lambda: self.custom.delete_namespaced_custom_object(
                    jobset.JOBSET_GROUP,
                    jobset.JOBSET_VERSION,
                    ns,
                    jobset.JOBSET_PLURAL,
                    name,
                    propagation_policy="Foreground",
                )
            )
        else:
            self._delete(lambda: self.batch.delete_namespaced_job(name, ns, propagation_policy="Foreground"))

    def delete_run(self, ftj: FineTuneJob) -> None:
        """Removes the Jobs (and their pods) and config of a previous spec revision."""
        ns = str(ftj.metadata.namespace)
        trainer = names.trainer_job_name(ftj)
        for kind, name in (
            ("Job", trainer),
            ("JobSet", trainer),
            ("Job", names.export_job_name(ftj)),
            ("Job", names.plan_job_name(ftj)),
        ):
            try:
                self.delete_child(ftj, kind, name)
            except ApiException as e:
                if kind != "JobSet" or e.status not in (403, 404):
                    raise  # a cluster without the JobSet API answers 404 for the kind
        self._delete(lambda: self.core.delete_namespaced_config_map(names.config_map_name(ftj), ns))

    def jobset_available(self) -> bool:
        """Whether the API server serves JobSets; cached, since it changes only with an install."""
        now = time.monotonic()
        if self._jobset_checked is None or now - self._jobset_checked[0] > API_CHECK_SECONDS:
            served = api_served(self.api, jobset.JOBSET_GROUP, jobset.JOBSET_VERSION, jobset.JOBSET_PLURAL)
            self._jobset_checked = (now, served)
        return self._jobset_checked[1]

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
