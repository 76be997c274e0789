"""Kueue and JobSet: the batch admission layer the operator's Jobs go through on a real cluster.

Both controllers are built from their Go modules by hack/build-binaries.sh, which copies their CRDs and
webhook manifests from the same module versions to `<bin_dir>/manifests/{kueue,jobset}`. There is no
Service network here, so every webhook's `clientConfig.service` becomes `clientConfig.url` =
https://127.0.0.1:<port><path>, served with the kit's `webhook` certificate and trusted through the
kit's CA as `caBundle`; Kueue's CRD conversion webhooks (v1beta1 <-> v1beta2) are wired the same way.

`up` applies namespaces and CRDs first, then starts the controllers, registers the webhook
configurations only once they answer (every webhook here fails closed, so registering them early would
block Jobs), and seeds the queues last.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from . import controlplane as cp
from . import kustomize, probes

KUEUE = "kueue"
JOBSET = "jobset"
# The names tests and the operator use.
CLUSTER_QUEUE = "kubetune"
LOCAL_QUEUE = "kubetune"
CPU_FLAVOR = "cpu"
GPU_FLAVOR = "gpu"
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io"
# Kueue v0.17.0 serves v1beta1 and v1beta2 and stores v1beta2.
KUEUE_VERSION = "v1beta2"
KUEUE_API = f"{KUEUE_GROUP}/{KUEUE_VERSION}"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Equal", "value": "present", "effect": "NoSchedule"}
# The node agent's CPU node; no label but its hostname sets it apart from the GPU nodes.
CPU_NODE = "cpu-node-0"
EPHEMERAL_STORAGE = "ephemeral-storage"
# ClusterQueue `kubetune`'s nominal quota per flavor, in the order Kueue tries them: CPU-only
# workloads fit `cpu` first, GPU workloads fall through to `gpu` (both GPU nodes). Kueue admits only
# workloads whose every requested resource the queue covers, and trainer and export pods request
# ephemeral-storage (their workspace), so the queue covers it: the nodes' local disk.
FLAVOR_QUOTAS: dict[str, dict[str, str]] = {
    CPU_FLAVOR: {"cpu": "16", "memory": "64Gi", GPU_RESOURCE: "0", EPHEMERAL_STORAGE: "500Gi"},
    GPU_FLAVOR: {"cpu": "64", "memory": "512Gi", GPU_RESOURCE: "16", EPHEMERAL_STORAGE: "7000Gi"},
}
KUEUE_FRAMEWORKS = ["batch/job", "jobset.x-k8s.io/jobset"]
# Kueue's manifests hold webhooks for every framework it knows. Those of integrations not enabled are
# not served, and failing closed they would block e.g. every Deployment, so only these groups stay.
KUEUE_WEBHOOK_GROUPS = frozenset({KUEUE_GROUP, "batch", "jobset.x-k8s.io"})
NAMESPACES = {KUEUE: "kueue-system", JOBSET: "jobset-system"}
FIELD_MANAGER = "kubetune-devcluster"

# Whenever its internal certificate management is off, Kueue reads a metrics serving certificate from
# the fixed path /etc/kueue/metrics/certs, metrics server or not, and exits without one. So it runs in
# a private mount namespace whose /etc is an overlay adding that one directory (a link to the kit's
# certificate): nothing is written to the machine's /etc, and the mounts vanish with the process.
_KUEUE_MOUNT_SCRIPT = "; ".join(
    [
        "scratch=$1 certs=$2; shift 2",
        'mount -t tmpfs -o mode=0700 kueue-etc "$scratch"',
        'mkdir -p "$scratch/upper/kueue/metrics" "$scratch/work"',
        'ln -s "$certs" "$scratch/upper/kueue/metrics/certs"',
        'mount -t overlay kueue-etc -o "lowerdir=/etc,upperdir=$scratch/upper,workdir=$scratch/work" /etc',
        'exec "$@"',
    ]
)


class AddonError(Exception):
    def __init__(self, message: str, component: str) -> None:
        super().__init__(message)
        self.component = component


def _dir(c: cp.Context, name: str) -> Path:
    return c.paths.root / "addons" / name


def config_file(c: cp.Context, name: str) -> Path:
    return _dir(c, name) / "config.yaml"


def cert_dir(c: cp.Context, name: str) -> Path:
    """tls.crt and tls.key, the file names controller-runtime's webhook server expects."""
    return _dir(c, name) / "certs"


def manifests(c: cp.Context, name: str) -> Path:
    return c.bin_dir / "manifests" / name


def webhook_port(c: cp.Context, name: str) -> int:
    return c.ports.kueue_webhook if name == KUEUE else c.ports.jobset_webhook


def health_port(c: cp.Context, name: str) -> int:
    return c.ports.kueue_health if name == KUEUE else c.ports.jobset_health


def _controller_manager_config(c: cp.Context, name: str) -> dict[str, Any]:
    return {
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port(c, name), "certDir": str(cert_dir(c, name))},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port(c, name)}"},
        "metrics": {"bindAddress": "0"},  # off
        "leaderElection": {"leaderElect": False},
        "clientConnection": {"qps": 50, "burst": 100},
    }


def kueue_config(c: cp.Context) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACES[KUEUE],
        "manageJobsWithoutQueueName": False,
        **_controller_manager_config(c, KUEUE),
        "integrations": {"frameworks": KUEUE_FRAMEWORKS},
        # The visibility API server reads its certificate from /visibility; nothing here uses it.
        "featureGates": {"VisibilityOnDemand": False},
    }


def jobset_config(c: cp.Context) -> dict[str, Any]:
    return {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        **_controller_manager_config(c, JOBSET),
    }


def _install(path: Path, data: bytes) -> None:
    """Writes a file only when its content changes, and atomically: the controllers watch their
    certificates and would log the half-written file of a plain rewrite."""
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def prepare(c: cp.Context) -> None:
    """Configuration files and serving certificates (the kit's `webhook` identity) for both."""
    for name, config in ((KUEUE, kueue_config(c)), (JOBSET, jobset_config(c))):
        certs = cert_dir(c, name)
        certs.mkdir(parents=True, exist_ok=True)
        certs.chmod(0o700)
        _install(certs / "tls.crt", c.pki.cert("webhook").read_bytes())
        _install(certs / "tls.key", c.pki.key("webhook").read_bytes())
        _install(config_file(c, name), yaml.safe_dump(config, sort_keys=False).encode())
    (_dir(c, KUEUE) / "etc").mkdir(exist_ok=True)


def kueue_argv(c: cp.Context) -> list[str]:
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare[1:1] = ["--user", "--map-root-user"]
    # `kueue` as the script's $0 keeps the process recognisable (processes.read_pid) before its exec.
    return [
        *unshare,
        "--",
        "sh",
        "-ec",
        _KUEUE_MOUNT_SCRIPT,
        KUEUE,
        str(_dir(c, KUEUE) / "etc"),
        str(cert_dir(c, KUEUE)),
        c.bin(KUEUE),
        f"--config={config_file(c, KUEUE)}",
        f"--kubeconfig={c.paths.component_kubeconfig(KUEUE)}",
    ]


def jobset_argv(c: cp.Context) -> list[str]:
    return [
        c.bin(JOBSET),
        f"--config={config_file(c, JOBSET)}",
        f"--kubeconfig={c.paths.component_kubeconfig(JOBSET)}",
        "--zap-log-level=info",  # its default is development mode, which logs at debug level
    ]


def ready(port: int) -> bool:
    """controller-runtime's readiness probe; Kueue's and JobSet's say ready once their webhook server is."""
    status, _ = probes.http_get(port, "/readyz")
    return status == 200


# --- manifests --------------------------------------------------------------------------------------


def _client_config(c: cp.Context, name: str, path: str) -> dict[str, str]:
    return {
        "url": f"https://127.0.0.1:{webhook_port(c, name)}{path}",
        "caBundle": base64.b64encode(c.pki.ca_cert.read_bytes()).decode(),
    }


def crds(c: cp.Context) -> list[dict[str, Any]]:
    return [
        crd
        for name in (KUEUE, JOBSET)
        for crd in kustomize.crds(manifests(c, name) / "crd", _client_config(c, name, "/convert"))
    ]


def _kept(name: str, hook: dict[str, Any]) -> bool:
    return name != KUEUE or all(set(rule["apiGroups"]) <= KUEUE_WEBHOOK_GROUPS for rule in hook["rules"])


def webhook_configurations(c: cp.Context) -> list[dict[str, Any]]:
    """Upstream's webhook configurations with their kustomize patches (JobSet's pod webhooks only for
    JobSet pods), Kueue's cut to KUEUE_WEBHOOK_GROUPS, called by URL and named after their owner."""
    out = []
    for name in (KUEUE, JOBSET):
        configs = kustomize.webhook_configurations(
            manifests(c, name) / "webhook", functools.partial(_client_config, c, name)
        )
        for kind, doc in configs.items():
            out.append(
                {
                    "apiVersion": doc["apiVersion"],
                    "kind": kind,
                    "metadata": {"name": f"{name}-{doc['metadata']['name']}"},
                    "webhooks": [h for h in doc["webhooks"] if _kept(name, h)],
                }
            )
    return out


# --- queues -----------------------------------------------------------------------------------------


def local_queue(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": LOCAL_QUEUE, "namespace": namespace},
        "spec": {"clusterQueue": CLUSTER_QUEUE},
    }


def queue_objects() -> list[dict[str, Any]]:
    """ResourceFlavors `cpu` and `gpu`, ClusterQueue `kubetune` over all namespaces, and its
    LocalQueue in `default`."""
    flavor_specs: dict[str, dict[str, Any]] = {
        CPU_FLAVOR: {"nodeLabels": {"kubernetes.io/hostname": CPU_NODE}},
        GPU_FLAVOR: {"nodeLabels": {"nvidia.com/gpu.present": "true"}, "tolerations": [GPU_TOLERATION]},
    }
    flavors = [
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": n}, "spec": spec}
        for n, spec in flavor_specs.items()
    ]
    cluster_queue = {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": CLUSTER_QUEUE},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": list(FLAVOR_QUOTAS[CPU_FLAVOR]),
                    "flavors": [
                        {
                            "name": flavor,
                            "resources": [{"name": r, "nominalQuota": q} for r, q in quota.items()],
                        }
                        for flavor, quota in FLAVOR_QUOTAS.items()
                    ],
                }
            ],
            "preemption": {"withinClusterQueue": "LowerPriority"},
        },
    }
    return [*flavors, cluster_queue, local_queue("default")]


# --- steps of `up` ----------------------------------------------------------------------------------


def _apply(c: cp.Context, docs: list[dict[str, Any]], component: str) -> None:
    result = cp.kubectl(
        c,
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        timeout=120,
    )
    if result.returncode != 0:
        raise AddonError(f"kubectl apply: {result.stderr.strip() or result.stdout.strip()}", component)


def _wait(c: cp.Context, condition: str, objects: list[str], component: str, timeout: int = 60) -> None:
    result = cp.kubectl(
        c, "wait", f"--for=condition={condition}", *objects, f"--timeout={timeout}s", timeout=timeout + 10
    )
    if result.returncode != 0:
        raise AddonError(f"kubectl wait: {result.stderr.strip() or result.stdout.strip()}", component)


def _served(c: cp.Context, crds: list[dict[str, Any]], namespaces: list[dict[str, Any]]) -> bool:
    """The namespaces exist and discovery lists every CRD's resource (it does once Established)."""
    if any(cp.admin_get(c, f"/api/v1/namespaces/{n['metadata']['name']}")[0] != 200 for n in namespaces):
        return False
    served: dict[str, set[str]] = {}
    for crd in crds:
        version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
        path = f"/apis/{crd['spec']['group']}/{version}"
        if path not in served:
            status, body = cp.admin_get(c, path)
            served[path] = {r["name"] for r in json.loads(body)["resources"]} if status == 200 else set()
        if crd["spec"]["names"]["plural"] not in served[path]:
            return False
    return True


def install_crds(c: cp.Context) -> str:
    """Their namespaces and CRDs, server-side applied and Established. Applying the CRDs takes seconds
    even unchanged, so it is skipped while the ones applied last are still there and Established."""
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in NAMESPACES.values()
    ]
    docs = crds(c)
    names = [f"crd/{d['metadata']['name']}" for d in docs]
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()
    stamp = c.paths.root / "addons" / "crds.sha256"
    if stamp.is_file() and stamp.read_text().strip() == digest and _served(c, docs, namespaces):
        return f"{len(docs)} CRDs unchanged"
    stamp.unlink(missing_ok=True)
    _apply(c, [*namespaces, *docs], KUEUE)
    _wait(c, "Established", names, KUEUE)
    stamp.write_text(f"{digest}\n")
    return f"{len(docs)} CRDs applied and Established"


def _probe_objects() -> list[dict[str, Any]]:
    """A queued Job and JobSet for a server-side dry run, which passes both controllers' webhooks."""
    labels = {QUEUE_NAME_LABEL: LOCAL_QUEUE}
    pod = {
        "restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
    }
    job_spec = {"suspend": True, "template": {"spec": pod}}
    meta = {"name": "devcluster-webhook-probe", "namespace": "default", "labels": labels}
    return [
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec},
        {
            "apiVersion": JOBSET_API,
            "kind": "JobSet",
            "metadata": meta,
            "spec": {"replicatedJobs": [{"name": "w", "template": {"spec": {"template": {"spec": pod}}}}]},
        },
    ]


def register_webhooks(c: cp.Context) -> int:
    """Registers the webhook configurations and checks the apiserver gets answers through them;
    returns how many webhooks."""
    configs = webhook_configurations(c)
    _apply(c, configs, KUEUE)
    result = cp.kubectl(
        c, "create", "--dry-run=server", "-o", "name", "-f", "-", input=yaml.safe_dump_all(_probe_objects())
    )
    if result.returncode != 0:
        raise AddonError(f"webhooks do not answer: {result.stderr.strip()}", KUEUE)
    return sum(len(cfg["webhooks"]) for cfg in configs)


def seed_queues(c: cp.Context) -> None:
    _apply(c, queue_objects(), KUEUE)
    objects = [f"clusterqueue/{CLUSTER_QUEUE}", f"localqueue/{LOCAL_QUEUE}", "--namespace=default"]
    _wait(c, "Active", objects, KUEUE, timeout=30)
