"""Paths of the GitOps health checks and their fixtures, and how to run the harnesses (hack/gitops)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUILD = REPO / "hack" / "gitops" / "build.sh"
HEALTH_LUA = REPO / "charts" / "kubetune" / "files" / "argocd-health.lua"


def run(binary: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], input=input, capture_output=True, text=True, cwd=REPO, timeout=60
    )


def run_harness(binary: Path, *args: str, input: str | None = None) -> list[dict[str, Any]]:
    """One result per object the harness read, in order."""
    result = run(binary, *args, input=input)
    command = " ".join([binary.name, *args])
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr}"
    return [json.loads(line) for line in result.stdout.splitlines()]


def fixture(name: str) -> Path:
    path = FIXTURES / name
    assert path.is_file(), path
    return path
