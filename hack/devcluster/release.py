"""Installs the operator into the local cluster the way a platform team does: `helm upgrade --install`."""

from __future__ import annotations

import hashlib
import os
import subprocess

from . import settings

NAMESPACE = "kubetune-system"
RELEASE = "kubetune"


def tool_env() -> dict[str, str]:
    env = dict(os.environ) | settings.cluster_env()
    env["PATH"] = f"{settings.bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def code_hash() -> str:
    """Changes whenever the operator's code does: the pod runs this checkout, not an image."""
    digest = hashlib.sha256()
    for path in sorted((settings.REPO_ROOT / "operator").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def install(extra_args: list[str] | None = None) -> None:
    """The chart from this checkout. The image is never pulled here: the pod runs this checkout,
    and a pod annotation with the code's hash makes `helm upgrade` restart it after a change.

    Helm installs a chart's CRDs only once and never upgrades them, so the CRD is applied first, as
    the upgrade notes in docs/install.md tell users to: a cluster kept from an earlier checkout would
    otherwise prune the spec fields added since."""
    subprocess.run(
        [
            "kubectl",
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(settings.REPO_ROOT / "charts" / "kubetune" / "crds"),
        ],
        env=tool_env(),
        check=True,
    )
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
            # Every test makes its own namespace, so the operator serves them all (an explicit
            # opt-in of the chart; namespaced is its default).
            "--set",
            "clusterWide=true",
            "--set-string",
            f"podAnnotations.kubetune\\.dev/code-hash={code_hash()}",
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
