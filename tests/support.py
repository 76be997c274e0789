"""Helpers shared by the tests that talk to the local cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Polls `check` until it returns something truthy; fails with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def tool_env() -> dict[str, str]:
    """The environment for kubectl and helm: the local cluster's kubeconfig, its binaries first."""
    import os

    from devcluster import settings

    env = dict(os.environ) | settings.cluster_env()
    env["PATH"] = f"{settings.bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_tool(*args: str, check: bool = True, input: str | None = None) -> str:
    """Runs kubectl or helm of the local cluster; on failure the assertion shows stderr."""
    import subprocess

    result = subprocess.run(args, env=tool_env(), capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
        )
    return result.stdout
