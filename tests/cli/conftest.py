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


# The operator, S3 and one tiny FineTuneJob run to Succeeded, shared by the CLI tests that read a
# finished run (logs, pull, generate): one training for the whole session keeps them quick.
@pytest.fixture(scope="session")
def operator_release(core: Any) -> Iterator[str]:
    """The operator installed with its chart, as tests/e2e's fixture of the same name does."""
    from devcluster import release
    from e2e_support import operator_leader
    from support import wait_for

    release.install()
    wait_for(lambda: operator_leader(core), 120, "an operator replica to lead")
    yield release.NAMESPACE
    release.uninstall()


@pytest.fixture(scope="session")
def s3_seeded(
    s3: Any, cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    from e2e_support import seed_s3

    return seed_s3(s3, cluster_env, tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def workspace(core: Any, cluster_env: dict[str, str]) -> Iterator[str]:
    """A namespace with the `kubetune-s3` Secret the examples reference (as tests/e2e's fixture)."""
    from devcluster import seed

    name = f"cli-{uuid.uuid4().hex[:6]}"
    seed.ensure_namespace(core, name, cluster_env)
    yield name
    core.delete_namespace(name)


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
