"""Command lines and health checks of etcd, the Kubernetes control plane and the node agent.

The flags follow controller-runtime's envtest defaults, plus what a cluster that really runs pods
needs: service-account tokens, the controller-manager's controllers and a kubelet client identity.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import probes, settings
from .pki import Pki

NODEAGENT_MODULE = "devcluster.nodeagent"


@dataclass(frozen=True)
class Context:
    paths: settings.Paths
    ports: settings.Ports
    pki: Pki
    bin_dir: Path

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)


def kubectl(
    c: Context, *args: str, input: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """The kit's kubectl as admin; `input` goes to its stdin (for `-f -`)."""
    return subprocess.run(
        [c.bin("kubectl"), f"--kubeconfig={c.paths.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def etcd_argv(c: Context) -> list[str]:
    client = f"http://127.0.0.1:{c.ports.etcd}"
    peer = f"http://127.0.0.1:{c.ports.etcd_peer}"
    return [
        c.bin("etcd"),
        "--name=devcluster",
        f"--data-dir={c.paths.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devcluster={peer}",
        # A throwaway cluster: losing the last writes on a power cut is fine, fsync latency is not.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_argv(c: Context) -> list[str]:
    pki = c.pki
    return [
        c.bin("kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{c.ports.etcd}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The `kubernetes` Endpoints may not hold a loopback address, so reconciling them only logs
        # an error every 10 s; pods here reach the apiserver at 127.0.0.1 directly.
        "--endpoint-reconciler-type=none",
        f"--secure-port={c.ports.apiserver}",
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        # Unused because the serving cert is given, but keeps it from defaulting to /var/run/kubernetes.
        f"--cert-dir={pki.dir / 'kube-apiserver'}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={settings.SERVICE_CIDR}",
        f"--service-account-issuer={settings.SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--allow-privileged=true",
        # `kubectl logs/exec` are proxied to the node agent's HTTPS endpoint with this identity.
        f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        "--kubelet-preferred-address-types=InternalIP",
        # Aggregation layer (e.g. metrics-server), trusting only the front-proxy-client identity.
        f"--requestheader-client-ca-file={pki.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        # No kube-proxy here: route to the extension apiserver's endpoint, not its ClusterIP.
        "--enable-aggregator-routing=true",
    ]


def _component_argv(c: Context, name: str, port: int) -> list[str]:
    kubeconfig = c.paths.component_kubeconfig(name)
    return [
        c.bin(name),
        f"--kubeconfig={kubeconfig}",
        # Lets them check callers of their own /metrics; /healthz and /readyz stay open.
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        # Where they put their self-signed serving certs.
        f"--cert-dir={c.pki.dir / name}",
    ]


def controller_manager_argv(c: Context) -> list[str]:
    pki = c.pki
    return [
        *_component_argv(c, "kube-controller-manager", c.ports.controller_manager),
        "--controllers=*",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.sa_key}",
        "--use-service-account-credentials",
        f"--service-cluster-ip-range={settings.SERVICE_CIDR}",
        # Lets CertificateSigningRequests be approved and signed by the throwaway CA.
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
    ]


def scheduler_argv(c: Context) -> list[str]:
    return _component_argv(c, "kube-scheduler", c.ports.scheduler)


def nodeagent_available() -> bool:
    return importlib.util.find_spec(NODEAGENT_MODULE) is not None


def nodeagent_argv(c: Context) -> list[str]:
    return [
        sys.executable,
        "-m",
        NODEAGENT_MODULE,
        f"--kubeconfig={c.paths.component_kubeconfig('nodeagent')}",
        f"--state-dir={c.paths.nodeagent_state}",
        "--apiserver-host=127.0.0.1",
        f"--apiserver-port={c.ports.apiserver}",
        f"--ca-file={c.pki.ca_cert}",
        f"--kubelet-port-base={c.ports.nodeagent_kubelet_base}",
    ]


def python_env() -> dict[str, str]:
    """The environment for the node agent: `devcluster` importable from the repo's hack dir."""
    env = dict(os.environ)
    extra = str(settings.HACK_DIR)
    env["PYTHONPATH"] = extra + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# --- health -----------------------------------------------------------------------------------


def etcd_healthy(c: Context) -> bool:
    status, body = probes.http_get(c.ports.etcd, "/health")
    return status == 200 and '"health":"true"' in body.replace(" ", "")


def admin_get(c: Context, path: str) -> tuple[int, str]:
    return probes.http_get(
        c.ports.apiserver,
        path,
        tls=True,
        ca_file=c.pki.ca_cert,
        client_cert=(c.pki.cert("admin"), c.pki.key("admin")),
    )


def apiserver_ready(c: Context) -> bool:
    status, body = admin_get(c, "/readyz")
    return status == 200 and body.strip() == "ok"


def apiserver_failed_checks(c: Context) -> str:
    """The failing lines of /readyz?verbose, to say what the apiserver is still waiting for."""
    status, body = admin_get(c, "/readyz?verbose")
    if status == 0:
        return body
    return "\n".join(line for line in body.splitlines() if "failed" in line) or body[-500:]


def secure_healthz(port: int) -> bool:
    # Their serving certs are self-signed; the check is about liveness, not identity.
    status, body = probes.http_get(port, "/healthz", tls=True)
    return status == 200 and body.strip() == "ok"


def node_names(c: Context) -> list[str]:
    status, body = admin_get(c, "/api/v1/nodes")
    if status != 200:
        return []
    return [n["metadata"]["name"] for n in json.loads(body).get("items", [])]


def nodes_ready(c: Context) -> bool:
    status, body = admin_get(c, "/api/v1/nodes")
    if status != 200:
        return False
    items = json.loads(body).get("items", [])
    return bool(items) and all(
        any(
            cond["type"] == "Ready" and cond["status"] == "True"
            for cond in n.get("status", {}).get("conditions", [])
        )
        for n in items
    )


def default_service_account_exists(c: Context) -> bool:
    status, _ = admin_get(c, "/api/v1/namespaces/default/serviceaccounts/default")
    return status == 200
