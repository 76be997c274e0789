"""A smoke Job on a fake GPU node that writes to S3: proves the local cluster end to end.

python -m devcluster.smoke  (after `hack/cluster up`)
"""

from __future__ import annotations

import sys
import time
import uuid

import boto3
from botocore.config import Config
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import settings

NAMESPACE = "kubetune-smoke"
SCRIPT = """
import os, socket, boto3
from botocore.config import Config
s3 = boto3.client("s3", config=Config(request_checksum_calculation="when_required"))
body = f"hello from pod {socket.gethostname()} on node {os.environ['NODE_NAME']}"
s3.put_object(Bucket=os.environ["BUCKET"], Key=os.environ["KEY"], Body=body.encode())
print("wrote", f"s3://{os.environ['BUCKET']}/{os.environ['KEY']}:", body)
"""


def main() -> int:
    env = settings.cluster_env()
    api = config.new_client_from_config(env["KUBECONFIG"])
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as e:
        if e.status != 409:
            raise
    secret = {
        "metadata": {"name": "s3"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        },
    }
    try:
        core.create_namespaced_secret(NAMESPACE, secret)
    except ApiException as e:
        if e.status != 409:
            raise
        core.replace_namespaced_secret("s3", NAMESPACE, secret)
    name, key = f"smoke-{uuid.uuid4().hex[:6]}", f"smoke/{uuid.uuid4().hex}.txt"

    def secret_ref(var: str) -> dict:
        return {"name": var, "valueFrom": {"secretKeyRef": {"name": "s3", "key": var}}}

    job = {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "smoke",
                            "image": "kubetune/trainer:dev",
                            "command": ["python", "-c", SCRIPT],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            "env": [
                                secret_ref("AWS_ACCESS_KEY_ID"),
                                secret_ref("AWS_SECRET_ACCESS_KEY"),
                                {"name": "AWS_ENDPOINT_URL", "value": env["AWS_ENDPOINT_URL"]},
                                {"name": "AWS_DEFAULT_REGION", "value": env["AWS_DEFAULT_REGION"]},
                                {"name": "BUCKET", "value": env["KUBETUNE_S3_BUCKET"]},
                                {"name": "KEY", "value": key},
                                {
                                    "name": "NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                },
                            ],
                        }
                    ],
                }
            },
        },
    }
    batch.create_namespaced_job(NAMESPACE, job)
    print(f"created Job {NAMESPACE}/{name} asking for nvidia.com/gpu: 1")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        conditions = batch.read_namespaced_job_status(name, NAMESPACE).status.conditions or []
        done = {c.type for c in conditions if c.status == "True"} & {"Complete", "Failed"}
        if done:
            break
        time.sleep(1)
    else:
        print("the smoke Job did not finish within 120 s", file=sys.stderr)
        return 1
    pod = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items[0]
    print(f"Job {name}: {done.pop()} on node {pod.spec.node_name}")
    print("pod log:", core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE).strip())
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(request_checksum_calculation="when_required"),
    )
    body = s3.get_object(Bucket=env["KUBETUNE_S3_BUCKET"], Key=key)["Body"].read().decode()
    print(f"s3://{env['KUBETUNE_S3_BUCKET']}/{key}: {body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
