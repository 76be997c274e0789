"""The CLI as users run it: the installed `kubetune` console script, in a subprocess, against the
local cluster."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

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
