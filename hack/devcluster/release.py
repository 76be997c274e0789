"""Installs the operator into the local cluster the way a platform team does: `helm upgrade --install`."""

from __future__ import annotations

import os
import subprocess

from . import settings

NAMESPACE = "kubetune-system"
RELEASE = "kubetune"


def tool_env() -> dict[str, str]:
    env = dict(os.environ) | settings.cluster_env()
    env["PATH"] = f"{settings.bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def install(extra_args: list[str] | None = None) -> None:
    """The chart from this checkout. The image is never pulled here: the pod runs this checkout."""
    subprocess.run(
        [
            "helm",
            "upgrade",
            "--install",
            RELEASE,
            str(settings.REPO_ROOT / "charts" / "kubetune"),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "image.repository=kubetune",
            "--set",
            "image.tag=dev",
            "--wait",
            "--timeout",
            "180s",
            *(extra_args or []),
        ],
        env=tool_env(),
        check=True,
    )


def uninstall() -> None:
    subprocess.run(
        ["helm", "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"], env=tool_env(), check=False
    )
