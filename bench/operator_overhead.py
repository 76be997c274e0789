"""Operator overhead: the same small fine-tuning job run directly (train + export commands) and as a
FineTuneJob through the operator (apply -> Succeeded), in one run, on the local cluster.

    hack/cluster up && PYTHONPATH=hack uv run python bench/operator_overhead.py [--steps 150] [--rounds 3]

Prints both wall times and their ratio (goal: <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from devcluster import model, release, seed, settings
from kubetune_api import FineTuneJob
from kubetune_operator.builders.trainer_input import document

NAMESPACE = f"kubetune-bench-{uuid.uuid4().hex[:6]}"  # a fresh one: the last may still be terminating


def spec(bucket: str, steps: int, name: str) -> dict[str, Any]:
    body = yaml.safe_load((settings.REPO_ROOT / "examples" / "finetunejob-tiny.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    body["spec"]["baseModel"]["uri"] = f"s3://{bucket}/models/tiny-random-llama/"
    body["spec"]["training"]["maxSteps"] = steps
    body["spec"]["output"]["uri"] = f"s3://{bucket}/bench/{uuid.uuid4().hex[:8]}"
    body["spec"].pop("ttlSecondsAfterFinished", None)
    return body


def run_direct(body: dict[str, Any], env: dict[str, str]) -> float:
    """What a user would run by hand: the trainer's two entrypoints with the same config."""
    ftj = FineTuneJob.from_k8s({**body, "metadata": {**body["metadata"], "uid": "direct"}})
    run_input = document(ftj)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(run_input)
        run_env = (
            dict(os.environ) | env | {"HF_HUB_OFFLINE": "1", "KUBETUNE_WORKDIR": str(Path(tmp) / "work")}
        )
        start = time.monotonic()
        for module in ("kubetune_trainer.train", "kubetune_trainer.export"):
            subprocess.run(
                [sys.executable, "-m", module, "--config", str(cfg)],
                env=run_env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return time.monotonic() - start


def run_operator(custom: client.CustomObjectsApi, body: dict[str, Any]) -> float:
    name = body["metadata"]["name"]
    start = time.monotonic()
    custom.create_namespaced_custom_object("kubetune.dev", "v1alpha1", NAMESPACE, "finetunejobs", body)
    while True:
        obj = custom.get_namespaced_custom_object("kubetune.dev", "v1alpha1", NAMESPACE, "finetunejobs", name)
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            elapsed = time.monotonic() - start
            if phase != "Succeeded":
                raise SystemExit(f"{name} failed: {obj['status'].get('message')}")
            return elapsed
        time.sleep(0.25)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    env = settings.cluster_env()
    api = config.new_client_from_config(env["KUBECONFIG"])
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    s3 = seed.s3_client(env)
    bucket = env["KUBETUNE_S3_BUCKET"]
    with tempfile.TemporaryDirectory() as tmp:
        seed.upload_folder(s3, model.write_tiny_llama(Path(tmp) / "tiny"), bucket, "models/tiny-random-llama")
    seed.upload_dataset(s3, bucket)
    seed.ensure_namespace(core, NAMESPACE, env)
    release.install()

    direct, operator = [], []
    for i in range(args.rounds):
        direct.append(run_direct(spec(bucket, args.steps, f"direct-{i}"), env))
        operator.append(run_operator(custom, spec(bucket, args.steps, f"bench-{uuid.uuid4().hex[:6]}")))
        print(f"round {i + 1}: direct {direct[-1]:.1f} s, FineTuneJob {operator[-1]:.1f} s", flush=True)
    d, o = statistics.median(direct), statistics.median(operator)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; tiny Llama, {args.steps} steps + fp32 export"
    )
    print(f"direct (train + export commands): {d:.1f} s")
    print(f"FineTuneJob (apply -> Succeeded): {o:.1f} s")
    print(f"overhead: {o - d:.1f} s")
    print(f"ratio: {o / d:.3f} (goal <= 1.10)")
    core.delete_namespace(NAMESPACE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
