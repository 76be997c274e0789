"""Helpers shared by the tests that talk to the local cluster: waiting, the kit's kubectl and helm,
and keeping the S3 secret out of failure output."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from devcluster import settings

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


SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN", re.IGNORECASE)


class Secret(str):
    """A string whose repr hides it. pytest shows values by their repr (locals with -l, the parts of a
    failed assert, dicts holding them), so a secret wrapped in this never appears there; str(), f-strings
    and every other use see the real value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def masked(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of env whose values under secret-looking names (AWS_SECRET_ACCESS_KEY, ...) are Secrets."""
    return {k: Secret(v) if SECRET_NAME.search(k) else v for k, v in env.items()}


def tool_env(cluster_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, the cluster's settings when given, and the kit's binaries first on
    PATH (`hack/cluster up` must have run once). Without cluster settings a KUBECONFIG from the caller's
    environment must not leak into the run."""
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    if cluster_env is not None:
        env.update(cluster_env)
    env["PATH"] = f"{settings.bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return masked(env)


def run(
    *args: str,
    cluster_env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Runs one of the kit's tools (kubectl and helm match the local cluster's version, whatever else
    is installed); with check, a failure raises an AssertionError carrying its output. Anything given a
    kubeconfig needs `cluster_env` (the fixture in tests/conftest.py)."""
    result = subprocess.run(
        args, env=tool_env(cluster_env), capture_output=True, text=True, input=input, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
    return result


def helm(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run("helm", *args, **kw)


def kubectl(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run("kubectl", *args, **kw)
