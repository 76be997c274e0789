"""The local cluster runs real workloads: Jobs are scheduled onto fake GPU nodes and the node
agent runs their pods as processes, with the behaviour in-cluster code relies on."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from support import wait_for

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def python_job(
    name: str,
    script: str,
    *,
    gpus: int = 0,
    backoff_limit: int = 0,
    env: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    ttl: int | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "kubetune/trainer:dev",
        "command": ["python", "-c", textwrap.dedent(script)],
        "env": env or [],
        "volumeMounts": mounts or [],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes or [],
        "terminationGracePeriodSeconds": 10,
    }
    if gpus:
        pod_spec["tolerations"] = [GPU_TOLERATION]
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    spec: dict[str, Any] = {"backoffLimit": backoff_limit, "template": {"spec": pod_spec}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, type_: str) -> Any:
    job = batch.read_namespaced_job_status(name, namespace)
    for c in job.status.conditions or []:
        if c.type == type_ and c.status == "True":
            return c
    return None


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items


def test_gpu_job_reads_secret_writes_s3_and_completes(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str, s3: Any, cluster_env: dict[str, str]
) -> None:
    bucket, key = cluster_env["KUBETUNE_S3_BUCKET"], f"tests/{uuid.uuid4().hex}/hello.txt"
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="s3"),
            string_data={
                "AWS_ACCESS_KEY_ID": cluster_env["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": cluster_env["AWS_SECRET_ACCESS_KEY"],
                "greeting": "hello from a secret",
            },
        ),
    )

    def secret_env(name: str, key_: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": "s3", "key": key_}}}

    script = f"""
        import os, boto3
        from botocore.config import Config
        s3 = boto3.client("s3", config=Config(request_checksum_calculation="when_required"))
        env = os.environ
        body = env["GREETING"] + " on " + env["NODE_NAME"] + ", " + env["OMP_WAIT_POLICY"]
        s3.put_object(Bucket={bucket!r}, Key={key!r}, Body=body.encode())
    """
    env = [
        secret_env("GREETING", "greeting"),
        secret_env("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        secret_env("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        {"name": "AWS_ENDPOINT_URL", "value": cluster_env["AWS_ENDPOINT_URL"]},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    batch.create_namespaced_job(namespace, python_job("hello", script, gpus=1, env=env))

    wait_for(lambda: job_condition(batch, namespace, "hello", "Complete"), 120, "the Job to complete")
    (pod,) = job_pods(core, namespace, "hello")
    assert pod.spec.node_name.startswith("gpu-node-")
    node = core.read_node(pod.spec.node_name)
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    # OpenMP threads of pods sharing the host's cores sleep while they wait (the agent's base env).
    assert body == f"hello from a secret on {pod.spec.node_name}, PASSIVE"


def test_more_gpus_than_a_node_has_stays_pending_unschedulable(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    batch.create_namespaced_job(namespace, python_job("too-big", "print('never runs')", gpus=9))

    def unschedulable() -> Any:
        for pod in job_pods(core, namespace, "too-big"):
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                    return pod, c
        return None

    pod, condition = wait_for(unschedulable, 60, "the scheduler to report Unschedulable")
    assert "nvidia.com/gpu" in condition.message
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def test_failing_container_reports_exit_code_and_termination_message(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    script = """
        import sys
        with open("/dev/termination-log", "w") as f:
            f.write("dataset row 7 has no field 'tone'")
        print("about to fail")
        sys.exit(3)
    """
    batch.create_namespaced_job(namespace, python_job("fails", script, gpus=1))

    failed = wait_for(lambda: job_condition(batch, namespace, "fails", "Failed"), 120, "the Job to fail")
    assert failed.reason == "BackoffLimitExceeded"
    (pod,) = job_pods(core, namespace, "fails")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"
    assert terminated.message == "dataset row 7 has no field 'tone'"
    # The container's output is readable through the apiserver, as with `kubectl logs`.
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace, container="main") == "about to fail\n"


def test_deleted_pod_gets_sigterm_and_job_replaces_it(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str, tmp_path: Path
) -> None:
    tmp_path.chmod(0o777)
    script = """
        import os, signal, sys, time
        def on_term(signum, frame):
            with open(f"/out/{os.environ['POD']}.sigterm", "w") as f:
                f.write("terminated gracefully")
            sys.exit(143)  # stopped, not finished: the Job must run it again
        signal.signal(signal.SIGTERM, on_term)
        open(f"/out/{os.environ['POD']}.started", "w").close()
        time.sleep(600)
    """
    job = python_job(
        "sleeper",
        script,
        backoff_limit=3,
        env=[{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        volumes=[{"name": "out", "hostPath": {"path": str(tmp_path), "type": "Directory"}}],
        mounts=[{"name": "out", "mountPath": "/out"}],
    )
    batch.create_namespaced_job(namespace, job)
    first = wait_for(
        lambda: [
            p
            for p in job_pods(core, namespace, "sleeper")
            if (tmp_path / f"{p.metadata.name}.started").exists()
        ],
        60,
        "the first pod to start",
    )[0].metadata.name

    core.delete_namespaced_pod(first, namespace)

    marker = tmp_path / f"{first}.sigterm"
    # The handler creates the file, then writes it: wait for the content, not just the file.
    wait_for(lambda: marker.exists() and marker.read_text(), 30, "the process to receive SIGTERM")
    assert marker.read_text() == "terminated gracefully"
    replacement = wait_for(
        lambda: [p for p in job_pods(core, namespace, "sleeper") if p.metadata.name != first],
        60,
        "the Job controller to create a replacement pod",
    )
    wait_for(
        lambda: (tmp_path / f"{replacement[0].metadata.name}.started").exists(), 60, "the replacement to run"
    )


def test_deleting_a_job_garbage_collects_its_pods(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    batch.create_namespaced_job(namespace, python_job("long", "import time; time.sleep(600)"))
    pod = wait_for(
        lambda: [p for p in job_pods(core, namespace, "long") if p.status.phase == "Running"],
        60,
        "the pod to run",
    )[0]
    assert pod.metadata.owner_references[0].kind == "Job"

    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")

    wait_for(lambda: not job_pods(core, namespace, "long"), 60, "the garbage collector to remove the pod")


def test_ttl_after_finished_removes_a_finished_job(batch: client.BatchV1Api, namespace: str) -> None:
    batch.create_namespaced_job(namespace, python_job("short", "print('done')", ttl=1))

    def gone() -> bool:
        try:
            batch.read_namespaced_job("short", namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, 90, "the TTL-after-finished controller to delete the Job")


def test_a_finished_pods_volumes_and_a_deleted_pods_folder_are_removed(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    """A kubelet's housekeeping: without it, every export Job's scratch volume stays on disk."""
    from devcluster import settings

    script = """
        open("/scratch/big", "wb").write(b"x" * 1024 * 1024)
        print("wrote the scratch file")
    """
    job = python_job(
        "scratchy",
        script,
        volumes=[{"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    batch.create_namespaced_job(namespace, job)
    wait_for(lambda: job_condition(batch, namespace, "scratchy", "Complete"), 120, "the Job to complete")
    (pod,) = job_pods(core, namespace, "scratchy")
    pods_dir = settings.paths().nodeagent_state / "pods"
    (folder,) = [d for d in pods_dir.iterdir() if d.name.endswith(pod.metadata.uid)]

    wait_for(lambda: not (folder / "volumes").exists(), 30, "the finished pod's volumes to be removed")
    assert "wrote the scratch file" in core.read_namespaced_pod_log(pod.metadata.name, namespace)

    batch.delete_namespaced_job("scratchy", namespace, propagation_policy="Foreground")
    wait_for(lambda: not folder.exists(), 60, "the deleted pod's folder to be removed")


def test_pod_acts_as_its_service_account_and_rbac_is_enforced(
    core: client.CoreV1Api, batch: client.BatchV1Api, rbac: client.RbacAuthorizationV1Api, namespace: str
) -> None:
    for name in ("readable", "secret-plans"):
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"k": name})
        )
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-one"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], resource_names=["readable"], verbs=["get"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-read-one"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-one"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    script = """
        import json
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        config.load_incluster_config()
        core = client.CoreV1Api()
        ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
        result = {"namespace": ns, "readable": core.read_namespaced_config_map("readable", ns).data["k"]}
        try:
            core.read_namespaced_config_map("secret-plans", ns)
            result["other"] = "allowed"
        except ApiException as e:
            result["other"] = e.status
        open("/dev/termination-log", "w").write(json.dumps(result))
    """
    batch.create_namespaced_job(namespace, python_job("rbac", script, service_account="reader"))

    wait_for(lambda: job_condition(batch, namespace, "rbac", "Complete"), 120, "the Job to complete")
    (pod,) = job_pods(core, namespace, "rbac")
    result = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert result == {"namespace": namespace, "readable": "readable", "other": 403}


def test_a_volume_over_the_projects_folder_does_not_hide_the_environment(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    """An emptyDir at /tmp (as a read-only-root pod has) must not hide a checkout that lives in /tmp."""
    from devcluster import settings

    covered, project = str(settings.REPO_ROOT.parent), settings.REPO_ROOT.name
    script = f"""
        import os, kubetune_operator
        assert os.listdir({covered!r}) == [{project!r}], os.listdir({covered!r})
        open("/dev/termination-log", "w").write("environment visible")
    """
    job = python_job(
        "covered",
        script,
        volumes=[{"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "scratch", "mountPath": covered}],
    )
    batch.create_namespaced_job(namespace, job)

    wait_for(lambda: job_condition(batch, namespace, "covered", "Complete"), 120, "the Job to complete")
    (pod,) = job_pods(core, namespace, "covered")
    assert pod.status.container_statuses[0].state.terminated.message == "environment visible"


RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10002, "fsGroup": 10003}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def test_a_restricted_pod_runs_as_its_user_with_a_read_only_root_and_writable_volumes(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    """The agent honours the securityContext as a kubelet does, so a pod that writes outside its
    volumes fails here as it would on a real node."""
    script = """
        import json, os, sys
        status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
        try:
            open(os.path.join(sys.prefix, "written-by-a-pod"), "w")
            outside = "written"
        except OSError as e:
            outside = os.strerror(e.errno)
        with open("/scratch/out", "w") as f:
            f.write("x")
        report = {
            "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "outside": outside, "scratchGroup": os.stat("/scratch/out").st_gid,
            "noNewPrivs": status["NoNewPrivs"].strip(), "capEff": status["CapEff"].strip(),
        }
        open("/dev/termination-log", "w").write(json.dumps(report))
    """
    job = python_job(
        "restricted",
        script,
        volumes=[{"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    job["spec"]["template"]["spec"]["securityContext"] = RESTRICTED_POD
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"] = RESTRICTED_CONTAINER
    batch.create_namespaced_job(namespace, job)

    wait_for(lambda: job_condition(batch, namespace, "restricted", "Complete"), 120, "the Job to complete")
    (pod,) = job_pods(core, namespace, "restricted")
    report = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert report == {
        "uid": 10001,
        "gid": 10002,
        "groups": [10003],
        "outside": "Read-only file system",
        "scratchGroup": 10003,
        "noNewPrivs": "1",
        "capEff": "0000000000000000",
    }


def test_run_as_non_root_without_a_user_is_refused_like_a_root_image(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    job = python_job("rootless", "print('never runs')")
    job["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    batch.create_namespaced_job(namespace, job)

    def refused() -> Any:
        for pod in job_pods(core, namespace, "rootless"):
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting
                if waiting is not None and waiting.reason == "CreateContainerConfigError":
                    return waiting
        return None

    waiting = wait_for(refused, 60, "the container to be refused")
    assert "runAsNonRoot and image will run as root" in waiting.message


def test_pods_resolve_headless_service_hostnames_for_a_rendezvous(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    """As with cluster DNS: worker 1 reaches worker 0 of an Indexed Job at `rdzv-0.workers.<ns>.svc`
    (a headless Service named after the pods' subdomain), and the name goes when worker 0 is done."""
    core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "workers"},
            "spec": {"clusterIP": "None", "selector": {"batch.kubernetes.io/job-name": "rdzv"}},
        },
    )
    script = f"""
        import json, os, socket, time
        peer, port = "rdzv-0.workers.{namespace}.svc", 29500
        def resolve(name):
            try:
                return socket.gethostbyname(name)
            except OSError:
                return None
        if os.environ["JOB_COMPLETION_INDEX"] == "0":
            with socket.create_server((os.environ["POD_IP"], port)) as server:
                server.settimeout(25)
                conn, _ = server.accept()
                with conn:
                    message = conn.recv(100)
                    conn.sendall(b"ack: " + message)
            result = {{"own": socket.getaddrinfo(socket.gethostname(), None)[0][4][0]}}
        else:
            deadline = time.monotonic() + 25
            while True:  # as a rendezvous client does: the peer may not be up yet
                try:
                    conn = socket.create_connection((peer, port), timeout=5)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            with conn:
                conn.sendall(b"hello from 1")
                result = {{"reply": conn.recv(100).decode(), "peer": conn.getpeername()[0]}}
            names = [peer + ".cluster.local", peer, "rdzv-0.workers"]
            result["resolved"] = {{name: resolve(name) for name in names}}
            # Worker 0 finishes: its record goes, in this running pod's /etc/hosts too.
            while resolve(peer) and time.monotonic() < deadline + 15:
                time.sleep(0.1)
            result["after"] = resolve(peer)
        open("/dev/termination-log", "w").write(json.dumps(result))
    """
    job = python_job(
        "rdzv",
        script,
        gpus=1,
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    )
    job["spec"].update(completionMode="Indexed", completions=2, parallelism=2)
    job["spec"]["template"]["spec"]["subdomain"] = "workers"
    batch.create_namespaced_job(namespace, job)

    finished = wait_for(
        lambda: (
            job_condition(batch, namespace, "rdzv", "Complete")
            or job_condition(batch, namespace, "rdzv", "Failed")
        ),
        60,
        "both workers to finish",
    )
    pods = {
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p
        for p in job_pods(core, namespace, "rdzv")
    }
    logs = {i: core.read_namespaced_pod_log(p.metadata.name, namespace) for i, p in pods.items()}
    assert finished.type == "Complete", logs
    assert pods["0"].spec.hostname == "rdzv-0"
    ip0 = pods["0"].status.pod_ip
    assert ip0 != pods["1"].status.pod_ip
    result0, result1 = (
        json.loads(pods[i].status.container_statuses[0].state.terminated.message) for i in ("0", "1")
    )
    assert result0 == {"own": ip0}
    assert result1["reply"] == "ack: hello from 1"
    assert result1["peer"] == ip0
    assert result1["resolved"] == {
        f"rdzv-0.workers.{namespace}.svc.cluster.local": ip0,
        f"rdzv-0.workers.{namespace}.svc": ip0,
        "rdzv-0.workers": ip0,
    }
    assert result1["after"] is None


def test_hosts_file_is_rewritten_in_place_with_peers_by_namespace(tmp_path: Path) -> None:
    """The file is bind-mounted over a running pod's /etc/hosts: it must keep its inode."""
    from devcluster.nodeagent import hosts

    peers = [
        hosts.PeerRecord("a", "workers", "job-1", "127.1.0.3"),
        hosts.PeerRecord("a", "workers", "job-0", "127.1.0.2"),
        hosts.PeerRecord("b", "workers", "job-0", "127.1.0.9"),
    ]
    own = ["job-0.workers.a.svc.cluster.local", "job-0"]
    path = tmp_path / "etc-hosts"
    path.write_text("old contents that are longer than what replaces them " * 20)
    inode = path.stat().st_ino

    assert hosts.write_in_place(path, hosts.render("127.1.0.2", own, "a", peers))
    assert not hosts.write_in_place(path, hosts.render("127.1.0.2", own, "a", peers))
    assert path.stat().st_ino == inode
    assert path.read_text().splitlines()[1:] == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost",
        "127.1.0.2\tjob-0.workers.a.svc.cluster.local job-0",
        "127.1.0.2\tjob-0.workers.a.svc job-0.workers.a job-0.workers",
        "127.1.0.3\tjob-1.workers.a.svc.cluster.local job-1.workers.a.svc job-1.workers.a job-1.workers",
        "127.1.0.9\tjob-0.workers.b.svc.cluster.local job-0.workers.b.svc job-0.workers.b",
    ]

    hosts.write_in_place(path, hosts.render("127.1.0.2", own, "a", []))
    assert path.stat().st_ino == inode
    assert path.read_text().splitlines()[1:] == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost",
        "127.1.0.2\tjob-0.workers.a.svc.cluster.local job-0",
    ]


def test_headless_records_follow_selector_readiness_and_publish_not_ready() -> None:
    """As the EndpointSlice controller and cluster DNS decide: selected by the Service named after the
    subdomain, ready (or publishNotReadyAddresses), and not finished."""
    from devcluster.nodeagent import hosts

    def pod(name: str, ip: str, ready: bool = True, phase: str = "Running", **labels: str) -> Any:
        return hosts.named_pod(
            {
                "metadata": {"name": name, "namespace": "a", "labels": labels or {"app": "w"}},
                "spec": {"hostname": name, "subdomain": "workers"},
                "status": {
                    "phase": phase,
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": str(ready)}],
                },
            }
        )

    pods = [pod("w0", "127.1.0.2"), pod("w1", "127.1.0.3", ready=False), pod("x", "127.1.0.4", app="x")]
    assert pod("done", "127.1.0.5", phase="Succeeded") is None

    def service(**spec: Any) -> Any:
        return hosts.headless_service({"spec": {"clusterIP": "None", **spec}})

    assert hosts.headless_service({"spec": {"clusterIP": "10.0.0.7", "selector": {"app": "w"}}}) is None
    selecting = {("a", "workers"): service(selector={"app": "w"})}
    assert hosts.records(selecting, pods) == [hosts.PeerRecord("a", "workers", "w0", "127.1.0.2")]
    publishing = {("a", "workers"): service(selector={"app": "w"}, publishNotReadyAddresses=True)}
    assert [r.hostname for r in hosts.records(publishing, pods)] == ["w0", "w1"]
    assert hosts.records({("a", "workers"): service()}, pods) == []  # no selector, no endpoints
    assert hosts.records({("b", "workers"): selecting[("a", "workers")]}, pods) == []
