"""Every operator setting, in one place, loaded from the environment (KUBETUNE_*)."""

from __future__ import annotations

import json
import os
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from kubetune_api.base import Quantity


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    trainer_image: str = Field(
        default="ghcr.io/kubetune/kubetune:0.1.0",
        description="Image of the trainer and export Jobs unless spec.resources.image overrides it.",
    )
    image_pull_policy: str = "IfNotPresent"
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty: all namespaces (cluster-wide)."
    )
    resync_seconds: float = Field(default=3.0, gt=0, description="How often each FineTuneJob is re-observed.")
    watch_server_timeout: int = Field(default=300, gt=0, description="Server-side timeout of each watch.")
    watch_client_timeout: int = Field(default=330, gt=0, description="Client-side timeout of each watch.")
    listen_address: str = Field(
        default="0.0.0.0",
        description="Address of the liveness and metrics endpoints (the chart sets the pod IP).",
    )
    liveness_port: int = Field(default=8080, gt=0, description="/healthz and /readyz of every replica.")
    leader_election: bool = Field(
        default=True, description="Replicas elect one leader on a Lease; false: this process always leads."
    )
    lease_namespace: str = Field(
        default="default", description="Namespace of the leader Lease (the chart's)."
    )
    lease_name: str = Field(default="kubetune-operator", description="Name of the leader Lease.")
    metrics_port: int = Field(default=9090, ge=0, description="Prometheus metrics; 0 disables the endpoint.")
    trainer_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for trainer and export pods (JSON object)."
    )
    pod_uid: int = Field(
        default=10001, gt=0, description="User of trainer and export pods (the image's own user)."
    )
    pod_gid: int = Field(
        default=10001, gt=0, description="Group of trainer and export pods; owns their volumes."
    )
    workspace_size: Quantity | None = Field(
        default="50Gi",
        description="ephemeral-storage request and limit of trainer and export pods (their emptyDirs: "
        "model, data, checkpoints, caches); empty: none.",
    )
    finished_job_ttl_seconds: int | None = Field(
        default=86400,
        ge=0,
        description="Once a FineTuneJob has finished, its Jobs (and their pods and logs) are deleted this "
        "long after they finished; the FineTuneJob keeps its status. Empty: keep them.",
    )
    export_on_gpu: bool = Field(
        default=False,
        description="Run CPU-provider exports on GPU nodes too (default: CPU nodes, GPUs stay free).",
    )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(f"KUBETUNE_{name.upper()}")
            if raw is None:
                continue
            if field.annotation in (list[str],):
                values[name] = [v.strip() for v in raw.split(",") if v.strip()]
            elif field.annotation in (dict[str, str],):
                try:
                    values[name] = json.loads(raw)
                except ValueError:
                    values[name] = raw  # not JSON: validation below names the variable
            elif type(None) in get_args(field.annotation):
                values[name] = raw or None  # an empty optional setting is unset
            else:
                values[name] = raw
        return cls.model_validate(values)
