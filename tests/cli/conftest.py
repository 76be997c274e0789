"""The CLI as users run it: the installed `kubetune` console script, in a subprocess, against the
local cluster."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cli_support import KUBETUNE


def kubetune_env(cluster_env: dict[str, str]) -> dict[str, str]:
    env = {k: str(v) for k, v in cluster_env.items()}
    return {**os.environ, **env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture
def kubetune(cluster_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `kubetune ARGS...`; returns the finished process (stdout, stderr, returncode)."""

    def run(
        *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBETUNE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**kubetune_env(cluster_env), **(env or {})},
        )

    return run


# The operator release, `workspace` and `s3_seeded` come from tests/conftest.py. One tiny FineTuneJob run
# to Succeeded is shared by the CLI tests that read a finished run (logs, pull, generate): one training
# for the whole session keeps them quick.
@dataclass(frozen=True)
class FinishedJob:
    namespace: str
    name: str
    obj: dict[str, Any]


@pytest.fixture(scope="session")
def finished_job(
    operator_release: str, s3_seeded: dict[str, str], core: Any, api_client: Any, cluster_env: dict[str, str]
) -> Iterator[FinishedJob]:
    """The tiny example (fp32 ONNX export) in its own namespace, Succeeded."""
    from kubernetes import client

    from devcluster import seed
    from e2e_support import apply_ftj, tiny_job, wait_phase

    namespace = f"cli-{uuid.uuid4().hex[:6]}"
    seed.ensure_namespace(core, namespace, cluster_env)
    custom = client.CustomObjectsApi(api_client)
    apply_ftj(custom, namespace, tiny_job("tiny", s3_seeded))
    obj = wait_phase(custom, namespace, "tiny", {"Succeeded", "Failed"}, 600)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    yield FinishedJob(namespace, "tiny", obj)
    core.delete_namespace(namespace)
