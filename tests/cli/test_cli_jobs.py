"""`kubetune finetune --wait`, `get` and `describe` as users run them: the real console script against
the local cluster, with the operator installed by its chart. Also how the CLI tells the API's refusals:
a 404, a 422 from the API server, a 403 for a user without rights."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

pytestmark = pytest.mark.cluster


def tiny_flags(seeded: dict[str, str], env: dict[str, str], name: str, *extra: str) -> list[str]:
    """examples/finetunejob-tiny.yaml, as flags."""
    return [
        *("finetune", "--name", name),
        *("-m", seeded["tiny"], "-d", seeded["train"]),
        *("--text-template", r"Phrase: {phrase}\nTone: {tone}", "--eval-ratio", "0.1", "--max-samples", "64"),
        *("--lora-r", "8", "--lora-alpha", "16", "--max-steps", "5", "--batch-size", "4"),
        *("--max-seq-len", "64", "--precision", "fp32", "--gpus", "0", "--cpu", "1", "--memory", "2Gi"),
        *("--set", "training.loggingSteps=1", "--set", "training.saveSteps=5"),
        *("--output", f"s3://{seeded['bucket']}/e2e/{uuid.uuid4().hex[:8]}"),
        *("--endpoint", env["AWS_ENDPOINT_URL"], "--region", "us-east-1", "--force-path-style"),
        *("--credentials-secret", "kubetune-s3"),
        *extra,
    ]


def test_finetune_waits_to_succeeded_then_get_and_describe_tell_the_story(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    cluster_env: dict[str, str],
    kubetune: Any,
) -> None:
    flags = tiny_flags(s3_seeded, cluster_env, "cli-tiny", "--no-export", "--wait", "--timeout", "600")
    done = kubetune("-n", workspace, *flags, timeout=660)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"finetunejob.kubetune.dev/cli-tiny created in {workspace}" in done.stdout
    assert "cli-tiny: Succeeded" in done.stdout, done.stdout
    # Without a terminal, the phases it went through are printed one per line.
    assert "phase: Training" in done.stdout, done.stdout

    listed = kubetune("-n", workspace, "get")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-tiny"))
    assert row.split()[:4] == ["cli-tiny", "Succeeded", "lora", "5/5"], row

    as_json = json.loads(kubetune("-n", workspace, "get", "cli-tiny", "-o", "json").stdout)
    assert as_json["status"]["phase"] == "Succeeded"

    described = kubetune("-n", workspace, "describe", "cli-tiny")
    assert described.returncode == 0, described.stderr
    text = described.stdout
    for section in ("Progress:", "Metrics:", "Last checkpoint:", "Artifacts:", "Conditions:", "Events:"):
        assert section in text, (section, text)
    assert "Step:           5/5 (100%)" in text or "5/5 (100%)" in text, text
    assert "ExportDisabled" in text, text  # the Exported condition's reason
    assert "CreatedTrainer" in text, text  # an Event of the operator's
    assert as_json["status"]["artifacts"][0]["uri"] in text

    # Shell completion of a job's name asks the cluster (bash's protocol, as `kubetune
    # --install-completion` sets it up).
    words = f"kubetune -n {workspace} describe cli-"
    completion = {"_KUBETUNE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "4"}
    completed = kubetune(env=completion)
    assert completed.stdout.split() == ["cli-tiny"], completed


def test_a_failed_job_is_exit_code_1_with_the_reason(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    cluster_env: dict[str, str],
    kubetune: Any,
) -> None:
    missing = dict(s3_seeded, train=f"s3://{s3_seeded['bucket']}/datasets/no-such-file.jsonl")
    done = kubetune(
        "-n",
        workspace,
        *tiny_flags(missing, cluster_env, "cli-missing", "--wait", "--timeout", "600"),
        timeout=660,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "error: Failed:" in done.stderr and "no-such-file.jsonl" in done.stderr, done.stderr


def test_api_refusals_are_one_readable_line_and_exit_code_3(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    cluster_env: dict[str, str],
    core: client.CoreV1Api,
    kubetune: Any,
    tmp_path: Path,
) -> None:
    missing = kubetune("-n", workspace, "describe", "no-such-job")
    assert missing.returncode == 3
    assert missing.stderr.strip() == f"error: FineTuneJob {workspace}/no-such-job not found", missing.stderr

    # The API server's own 422: the name is not a DNS name (the flags' models do not check names).
    refused = kubetune("-n", workspace, *tiny_flags(s3_seeded, cluster_env, "Not_A_Name"))
    assert refused.returncode == 3, refused
    assert "invalid FineTuneJob:" in refused.stderr and "metadata.name" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    # A user the cluster knows but who may not touch FineTuneJobs.
    core.create_namespaced_service_account(workspace, {"metadata": {"name": "no-rights"}})
    token = core.create_namespaced_service_account_token(
        "no-rights", workspace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    admin = yaml.safe_load(Path(cluster_env["KUBECONFIG"]).read_text())
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "no-rights", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "limited",
                        "context": {
                            "cluster": admin["clusters"][0]["name"],
                            "user": "no-rights",
                            "namespace": workspace,
                        },
                    }
                ],
                "current-context": "limited",
            }
        )
    )
    forbidden = kubetune("--kubeconfig", str(kubeconfig), "get")
    assert forbidden.returncode == 3, forbidden
    assert forbidden.stderr.startswith("error: forbidden:"), forbidden.stderr
    assert "finetunejobs" in forbidden.stderr and "no-rights" in forbidden.stderr, forbidden.stderr
