"""`up`, `down` and `status`: the components, the order they start and stop in, and their checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import addons, probes, processes, s3, settings
from . import controlplane as cp
from .pki import CLIENTS, Pki
from .processes import Component


@dataclass(frozen=True)
class Service:
    component: Component
    ports: Callable[[settings.Ports], list[int]]
    argv: Callable[[cp.Context], list[str]]
    healthy: Callable[[cp.Context], bool]
    start_timeout: float
    # How long SIGTERM may take before SIGKILL; the node agent first stops its pods.
    stop_timeout: float = 15.0
    env: Callable[[cp.Context], dict[str, str]] | None = None
    available: Callable[[], bool] = field(default=lambda: True)

    @property
    def name(self) -> str:
        return self.component.name


def _s3_env(c: cp.Context) -> dict[str, str]:
    return s3.server_env(settings.s3_credentials())


def _s3_healthy(c: cp.Context) -> bool:
    return s3.ready(settings.s3_endpoint(), settings.s3_credentials())


ETCD = Service(Component("etcd", "etcd"), lambda p: [p.etcd, p.etcd_peer], cp.etcd_argv, cp.etcd_healthy, 30)
APISERVER = Service(
    Component("kube-apiserver", "kube-apiserver"),
    lambda p: [p.apiserver],
    cp.apiserver_argv,
    cp.apiserver_ready,
    90,
)
CONTROLLER_MANAGER = Service(
    Component("kube-controller-manager", "kube-controller-manager"),
    lambda p: [p.controller_manager],
    cp.controller_manager_argv,
    lambda c: cp.secure_healthz(c.ports.controller_manager),
    60,
)
SCHEDULER = Service(
    Component("kube-scheduler", "kube-scheduler"),
    lambda p: [p.scheduler],
    cp.scheduler_argv,
    lambda c: cp.secure_healthz(c.ports.scheduler),
    60,
)
NODEAGENT = Service(
    Component("nodeagent", cp.NODEAGENT_MODULE),
    lambda p: p.nodeagent(),
    cp.nodeagent_argv,
    cp.nodes_ready,
    60,
    stop_timeout=60,
    env=lambda c: cp.python_env(),
    available=cp.nodeagent_available,
)
S3 = Service(
    Component("s3", s3.WEED_PROGRAM),
    lambda p: [v for k, v in p.by_name().items() if k == "s3" or k.startswith(("s3_", "weed_"))],
    lambda c: s3.argv(c.ports, c.paths.s3_data, c.paths.s3_identities),
    _s3_healthy,
    30,
    env=_s3_env,
)

KUEUE = Service(
    Component(addons.KUEUE, addons.KUEUE),
    lambda p: [p.kueue_webhook, p.kueue_health],
    addons.kueue_argv,
    lambda c: addons.ready(c.ports.kueue_health),
    90,
)
JOBSET = Service(
    Component(addons.JOBSET, addons.JOBSET),
    lambda p: [p.jobset_webhook, p.jobset_health],
    addons.jobset_argv,
    lambda c: addons.ready(c.ports.jobset_health),
    90,
)

START_ORDER = [ETCD, S3, APISERVER, CONTROLLER_MANAGER, SCHEDULER, NODEAGENT, JOBSET, KUEUE]
# Kueue and JobSet go first: their webhooks fail closed, so no Job changes while they are missing.
STOP_ORDER = [KUEUE, JOBSET, NODEAGENT, SCHEDULER, CONTROLLER_MANAGER, APISERVER, ETCD, S3]


class UpError(Exception):
    def __init__(self, message: str, component: str | None = None) -> None:
        super().__init__(message)
        self.component = component


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {message}", flush=True)


def build_binaries() -> Path:
    """Runs the build script (a no-op when cached); its progress on stderr goes straight to the user."""
    result = subprocess.run(
        ["bash", str(settings.BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise UpError(f"{settings.BUILD_SCRIPT.name} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


def _context(bin_dir: Path) -> cp.Context:
    p = settings.paths()
    return cp.Context(p, settings.load_ports(), Pki(p.pki), bin_dir)


def _pid(c: cp.Context, svc: Service) -> int | None:
    return processes.read_pid(c.paths.pid(svc.name), svc.component, str(c.paths.root))


def _prepare_state(c: cp.Context) -> None:
    p = c.paths
    for d in (p.root, p.logs, p.run, p.pki, p.etcd_data, p.s3_data, p.nodeagent_state):
        d.mkdir(parents=True, exist_ok=True)
    p.etcd_data.chmod(0o700)  # etcd refuses a data dir others can read
    p.marker.write_text("local cluster state; `hack/cluster down --purge` removes this dir\n")
    p.bin_dir_file.write_text(f"{c.bin_dir}\n")
    c.pki.ensure()
    server = f"https://127.0.0.1:{c.ports.apiserver}"
    c.pki.write_kubeconfig(p.kubeconfig, "admin", server)
    for client in CLIENTS:
        if client.kubeconfig and client.name != "admin":
            c.pki.write_kubeconfig(p.component_kubeconfig(client.name), client.name, server)
    admin = s3.ensure_credentials(p.s3_credentials)
    limited = s3.ensure_credentials(p.s3_limited_credentials)
    s3.write_identities(p.s3_identities, admin, limited, settings.bucket_name())
    addons.prepare(c)


def _check_ports_free(c: cp.Context, svc: Service) -> None:
    busy = sorted(set(svc.ports(c.ports)) & processes.listening_ports())
    if busy:
        names = {v: k for k, v in c.ports.by_name().items()}
        names.update(dict.fromkeys(c.ports.nodeagent(), "nodeagent_kubelet_base"))
        hints = ", ".join(f"{port} ({settings.port_env_var(names[port])})" for port in busy)
        raise UpError(f"{svc.name}: port(s) already in use by another process: {hints}")


def _start(c: cp.Context, svc: Service, clock: Clock) -> bool:
    """Starts `svc` unless it runs already; returns True when it was started."""
    pid = _pid(c, svc)
    if pid is not None:
        clock.say(f"{svc.name}: already running (pid {pid})")
        return False
    _check_ports_free(c, svc)
    env = svc.env(c) if svc.env else None
    proc = processes.start(
        svc.component,
        svc.argv(c),
        c.paths.log(svc.name),
        c.paths.pid(svc.name),
        env=env,
        cwd=settings.REPO_ROOT,
    )
    clock.say(f"{svc.name}: started (pid {proc.pid}, log {c.paths.log(svc.name)})")
    return True


def _wait_healthy(c: cp.Context, svc: Service, clock: Clock, what: str = "ready") -> None:
    def check() -> bool:
        if _pid(c, svc) is None:
            raise UpError(f"{svc.name} exited", svc.name)
        return svc.healthy(c)

    if not probes.wait_until(check, svc.start_timeout):
        detail = ""
        if svc is APISERVER:
            detail = "\nfailing checks:\n" + cp.apiserver_failed_checks(c)
        raise UpError(f"{svc.name} not {what} after {svc.start_timeout:.0f} s{detail}", svc.name)
    clock.say(f"{svc.name}: {what}")


def _kubectl(c: cp.Context, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(c, *args, timeout=timeout)


def _wait_nodes(c: cp.Context, clock: Clock) -> None:
    # `kubectl wait --all` fails at once while no Node exists, so first wait for the registration.
    if not probes.wait_until(lambda: _pid(c, NODEAGENT) is not None and bool(cp.node_names(c)), 60, 0.5):
        if _pid(c, NODEAGENT) is None:
            raise UpError("nodeagent exited", NODEAGENT.name)
        raise UpError("nodeagent registered no Node within 60 s", NODEAGENT.name)
    result = _kubectl(c, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=60s")
    if result.returncode != 0:
        raise UpError(f"nodes not Ready: {result.stderr.strip() or result.stdout.strip()}", NODEAGENT.name)
    clock.say(f"nodeagent: nodes Ready ({', '.join(cp.node_names(c))})")


def _setup_s3(c: cp.Context, clock: Clock) -> None:
    creds = settings.s3_credentials()
    endpoint = settings.s3_endpoint()
    bucket = settings.bucket_name()
    try:
        created = s3.ensure_bucket(endpoint, creds, bucket)
        s3.ensure_bucket(endpoint, creds, settings.readonly_bucket_name())
        s3.check_auth_enforced(endpoint, creds)
    except Exception as e:
        raise UpError(f"s3: {e}", S3.name) from e
    clock.say(f"s3: bucket {bucket} {'created' if created else 'exists'}; a wrong secret gets 403")


def _failed(e: UpError) -> int:
    print(f"\nERROR: {e}", file=sys.stderr)
    if e.component:
        log = settings.paths().log(e.component)
        print(f"--- last lines of {log} ---\n{processes.tail(log)}\n---", file=sys.stderr)
    print("Inspect the logs, then `hack/cluster down` (or `status`).", file=sys.stderr)
    return 1


def up() -> int:
    clock = Clock()
    try:
        bin_dir = build_binaries()
        c = _context(bin_dir)
        clock.say(f"binaries in {bin_dir}; state in {c.paths.root}")
        _prepare_state(c)
        started: list[str] = []

        def start_and_wait(svc: Service) -> None:
            if _start(c, svc, clock):
                started.append(svc.name)
            _wait_healthy(c, svc, clock)

        start_and_wait(ETCD)
        if _start(c, S3, clock):  # S3 needs no control plane; its start overlaps the apiserver's
            started.append(S3.name)
        start_and_wait(APISERVER)
        for svc in (CONTROLLER_MANAGER, SCHEDULER):
            if _start(c, svc, clock):
                started.append(svc.name)
        if NODEAGENT.available():
            if _start(c, NODEAGENT, clock):
                started.append(NODEAGENT.name)
        else:
            print(
                f"WARNING: python module {cp.NODEAGENT_MODULE} not found; no node agent, pods will not run",
                file=sys.stderr,
            )
        # The controllers need their CRDs served when they start (Kueue's JobSet integration, JobSet's).
        clock.say(f"kueue, jobset: {addons.install_crds(c)}")
        for svc in (JOBSET, KUEUE):
            if _start(c, svc, clock):
                started.append(svc.name)
        for svc in (CONTROLLER_MANAGER, SCHEDULER, S3):
            _wait_healthy(c, svc, clock)
        _setup_s3(c, clock)
        if NODEAGENT.available():
            _wait_nodes(c, clock)
        # Pods are refused until the serviceaccount controller made the namespace's `default` SA.
        if not probes.wait_until(lambda: cp.default_service_account_exists(c), 60):
            raise UpError("the default ServiceAccount did not appear within 60 s", CONTROLLER_MANAGER.name)
        result = _kubectl(c, "get", "--raw", "/readyz")
        if result.returncode != 0 or result.stdout.strip() != "ok":
            raise UpError(f"kubectl get --raw /readyz: {result.stdout}{result.stderr}", APISERVER.name)
        for svc in (JOBSET, KUEUE):
            _wait_healthy(c, svc, clock)
        clock.say(f"kueue, jobset: {addons.register_webhooks(c)} webhooks registered by URL, and answering")
        addons.seed_queues(c)
        clock.say(
            f"kueue: ClusterQueue {addons.CLUSTER_QUEUE}, LocalQueue default/{addons.LOCAL_QUEUE} Active"
        )
    except addons.AddonError as e:
        return _failed(UpError(str(e), e.component))
    except UpError as e:
        return _failed(e)
    if started:
        clock.say(f"cluster up (started: {', '.join(started)})")
    else:
        clock.say("cluster already running and healthy")
    print('Use it with:  eval "$(hack/cluster env)"')
    return 0


def down(purge: bool = False) -> int:
    p = settings.paths()
    ports = settings.load_ports()
    owner = str(p.root)
    ok = True
    for svc in STOP_ORDER:
        pid_file = p.pid(svc.name)
        pid = processes.read_pid(pid_file, svc.component, owner)
        if pid is None:
            continue
        t0 = time.monotonic()
        try:
            how = processes.stop(pid, svc.stop_timeout)
        except RuntimeError as e:
            print(f"{svc.name}: {e}", file=sys.stderr)
            ok = False
            continue
        pid_file.unlink(missing_ok=True)
        print(f"{svc.name}: {how} (pid {pid}, {time.monotonic() - t0:.1f} s)", flush=True)
    # A multi-threaded process can show as a zombie while its other threads still close its
    # sockets, so give the ports a moment before calling them leftovers.
    probes.wait_until(lambda: not set(ports.all()) & processes.listening_ports(), 5)
    still = sorted(set(ports.all()) & processes.listening_ports())
    if still:
        print(f"ERROR: still listening on the kit's ports: {still}", file=sys.stderr)
        ok = False
    else:
        print("nothing listens on the kit's ports any more")
    if purge and p.root.exists():
        if not p.marker.exists():
            print(
                f"ERROR: {p.root} lacks {p.marker.name}; not removing a dir this kit did not create",
                file=sys.stderr,
            )
            return 1
        shutil.rmtree(p.root)
        print(f"removed {p.root}")
    return 0 if ok else 1


def status() -> int:
    p = settings.paths()
    try:
        bin_dir = settings.bin_dir()
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    c = _context(bin_dir)
    all_ok = True
    print(f"state: {p.root}")
    print(f"{'COMPONENT':<26}{'PID':>8}  {'ALIVE':<6}{'READY':<6}LOG")
    for svc in START_ORDER:
        if svc is NODEAGENT and not svc.available():
            print(f"{svc.name:<26}{'-':>8}  {'-':<6}{'-':<6}(module {cp.NODEAGENT_MODULE} not installed)")
            continue
        pid = _pid(c, svc)
        ready = pid is not None and svc.healthy(c)
        all_ok &= ready
        print(
            f"{svc.name:<26}{pid or '-':>8}  {'yes' if pid else 'no':<6}{'yes' if ready else 'no':<6}"
            f"{c.paths.log(svc.name)}"
        )
    print(
        f"apiserver https://127.0.0.1:{c.ports.apiserver}   s3 {settings.s3_endpoint()}   "
        f"bucket {settings.bucket_name()}"
    )
    print(
        f"webhooks by URL: kueue https://127.0.0.1:{c.ports.kueue_webhook}   "
        f"jobset https://127.0.0.1:{c.ports.jobset_webhook}   (`kubectl get workloads -A`)"
    )
    return 0 if all_ok else 1
