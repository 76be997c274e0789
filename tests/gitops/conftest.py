"""The GitOps health harnesses (hack/gitops), built once per session.

They are real Go programs around the real libraries (kstatus from sigs.k8s.io/cli-utils, Argo CD's
Lua VM gopher-lua), so these tests need Go, as `hack/setup` does; without it they fail, never skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from gitops_tools import BUILD, REPO


@pytest.fixture(scope="session")
def gitops_bin() -> Path:
    # Cold (apimachinery and all): about a minute on 2 cores; warm: a no-op.
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, f"{BUILD.name} failed:\n{result.stderr}"
    return Path(result.stdout.strip().splitlines()[-1])
