"""Runs one pod: volumes, init containers, containers, restarts, status, termination."""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from . import hosts, process, security
from .env import ContainerConfigError, container_env, expand
from .volumes import VolumeNotReady, materialise

if TYPE_CHECKING:
    from .agent import NodeAgent

# Tries of one pod status update when the connection drops (not when the API server answers).
STATUS_ATTEMPTS = 3

log = logging.getLogger(__name__)

TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class ContainerState:
    """What the agent knows of one container; rendered into a containerStatus."""

    spec: dict[str, Any]
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    cgroup: Path | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def terminated(self) -> dict[str, Any] | None:
        return self.state.get("terminated")

    def status(self, pod_uid: str) -> dict[str, Any]:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"kubetune://{pod_uid}/{self.name}/{self.restart_count}",
            "state": self.state,
            "lastState": self.last_state,
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
        }


class PodRunner(threading.Thread):
    def __init__(self, agent: NodeAgent, pod: dict[str, Any], pod_ip: str) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        # The downward API (fieldRef status.podIP) must see the address before the status is written.
        self.pod = {
            **pod,
            "status": {**(pod.get("status") or {}), "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]},
        }
        self.pod_ip = pod_ip
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = agent.state_dir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.hosts_path = self.dir / "etc-hosts"
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.init_containers = [ContainerState(c) for c in spec.get("initContainers") or []]
        self.containers = [ContainerState(c) for c in spec.get("containers") or []]
        self.phase = "Pending"
        self.start_time = now()
        self.initialized = not self.init_containers
        self._stop_requested = threading.Event()
        # Set when the pod object is gone: the runner then removes the pod's folder, logs included.
        self.forgotten = threading.Event()
        self._grace_s = 30.0
        self._exits: queue.Queue[ContainerState] = queue.Queue()
        self._status_lock = threading.Lock()

    # ---- public, called from the watch thread ----------------------------------------------
    def stop(self, grace_seconds: float) -> None:
        """Pod deletion: SIGTERM now, SIGKILL after the grace period (done by the runner)."""
        # A second, shorter deletion (e.g. --force) shortens the grace period, never lengthens it.
        self._grace_s = min(self._grace_s, grace_seconds) if self._stop_requested.is_set() else grace_seconds
        self._stop_requested.set()
        for c in self.all_containers():
            if c.proc is not None and c.proc.poll() is None:
                process.signal_group(c.proc, signal.SIGTERM)

    def all_containers(self) -> list[ContainerState]:
        return self.init_containers + self.containers

    def log_path(self, container: str, previous: bool = False) -> Path | None:
        for c in self.all_containers():
            if c.name == container:
                n = c.restart_count - 1 if previous else c.restart_count
                return self._log_file(c, n) if n >= 0 else None
        return None

    def is_running(self, container: str) -> bool:
        return any(c.name == container and "running" in c.state for c in self.all_containers())

    # ---- the pod's life -------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # a bug here must not take down the whole agent
            log.exception("pod %s/%s: runner failed", self.namespace, self.pod_name)
            self.phase = "Failed"
            self._push_status(message="node agent error; see the node agent log")
        finally:
            self._kill_all()
            for c in self.all_containers():
                process.remove_cgroup(c.cgroup)
            # As a kubelet does by default: a terminated pod's emptyDir volumes go; its logs stay
            # until the pod object is deleted.
            shutil.rmtree(self.dir / "volumes", ignore_errors=True)
            if self._stop_requested.is_set():
                self._confirm_deletion()
            if self.forgotten.is_set():
                shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self) -> None:
        self._push_status()
        mounts_by_volume = self._prepare_volumes()
        if mounts_by_volume is None:
            return
        for c in self.init_containers:
            if not self._run_to_completion(c, mounts_by_volume):
                self.phase = "Failed"
                self._push_status()
                return
        self.initialized = True
        for c in self.containers:
            self._start(c, mounts_by_volume)
        self.phase = "Running"
        self._push_status()
        self._supervise(mounts_by_volume)

    def _prepare_volumes(self) -> dict[str, Path] | None:
        """Retries like a kubelet while a referenced ConfigMap/Secret is missing."""
        while not self._stop_requested.is_set():
            try:
                return materialise(self.agent.core, self.pod, self.dir / "volumes", self.agent.pvc_root)
            except VolumeNotReady as e:
                message = f"MountVolume.SetUp failed: {e}"
                self._set_waiting(self.all_containers(), "ContainerCreating", message)
                self.agent.event(self.pod, "FailedMount", message, warning=True)
            if self._stop_requested.wait(3):
                break
        return None

    def _run_to_completion(self, c: ContainerState, mounts: dict[str, Path]) -> bool:
        while not self._stop_requested.is_set():
            if not self._start(c, mounts):
                return False
            self._push_status()
            assert c.proc is not None
            while c.proc.poll() is None:
                if self._stop_requested.wait(0.2):
                    self._terminate_gracefully()
            self._record_exit(c)
            if c.terminated and c.terminated["exitCode"] == 0:
                return True
            if self.restart_policy == "Never" or not self._backoff(c):
                return False
        return False

    def _supervise(self, mounts: dict[str, Path]) -> None:
        for c in self.containers:
            if c.proc is None:
                self._exits.put(c)  # it could not start; its terminated state is already set
            else:
                self._watch_exit(c)
        pending = {c.name for c in self.containers}
        while pending:
            try:
                c = self._exits.get(timeout=0.5)
            except queue.Empty:
                if self._stop_requested.is_set():
                    self._terminate_gracefully()
                continue
            self._record_exit(c)
            code = c.terminated["exitCode"] if c.terminated else 1
            restart = not self._stop_requested.is_set() and (
                self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0)
            )
            if restart and self._backoff(c) and self._start(c, mounts):
                self._watch_exit(c)
                self._push_status()
                continue
            pending.discard(c.name)
            self._push_status()
        codes = [c.terminated["exitCode"] if c.terminated else 1 for c in self.containers]
        self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        self._push_status()

    def _watch_exit(self, c: ContainerState) -> None:
        proc = c.proc
        assert proc is not None

        def wait() -> None:
            proc.wait()
            self._exits.put(c)

        threading.Thread(target=wait, name=f"wait-{self.pod_name}-{c.name}", daemon=True).start()

    def _backoff(self, c: ContainerState) -> bool:
        """Crash-loop back-off (shortened: 1 s doubling to 10 s). False if the pod is stopping."""
        delay = min(10.0, 2.0 ** min(c.restart_count, 4) / 2)
        c.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container",
            }
        }
        self._push_status()
        if self._stop_requested.wait(delay):
            return False
        c.last_state = {"terminated": c.terminated} if c.terminated else {}
        c.restart_count += 1
        return True

    # ---- one container ----------------------------------------------------------------------
    def _base_env(self) -> dict[str, str]:
        api_port = str(self.agent.apiserver_port)
        return {
            "PATH": self.agent.pod_path,
            "HOME": "/root",
            "HOSTNAME": self._hostname(),
            "KUBERNETES_SERVICE_HOST": self.agent.apiserver_host,
            "KUBERNETES_SERVICE_PORT": api_port,
            "KUBERNETES_SERVICE_PORT_HTTPS": api_port,
            "KUBERNETES_PORT": f"tcp://{self.agent.apiserver_host}:{api_port}",
            # Every pod of every fake node shares this host's few cores. OpenMP threads that spin while
            # waiting would starve another pod's threads: two SmolLM2 trainings at once ran 4x slower
            # than one each, against 1.5x with waiting threads asleep. A pod's own env overrides it.
            "OMP_WAIT_POLICY": "PASSIVE",
        }

    def _hostname(self) -> str:
        return str(self.pod["spec"].get("hostname") or self.pod_name)[:63]

    def _start(self, c: ContainerState, volumes: dict[str, Path]) -> bool:
        spec = c.spec
        c.proc = None
        config = self._container_config(c)
        if config is None:
            return False
        env, identity = config
        argv = [expand(a, env) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        if not spec.get("command"):
            # Images are never pulled here, so an image's own ENTRYPOINT is unknown.
            c.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "ContainerCannotRun",
                    "message": "the local node agent runs no image entrypoints: set command",
                    "startedAt": now(),
                    "finishedAt": now(),
                }
            }
            return False
        mounts = self._mounts(c, volumes)
        term_file = self.dir / "termination" / f"{c.name}-{c.restart_count}"
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.write_bytes(b"")
        # The container's own file, writable by its user as on a kubelet.
        os.chown(term_file, identity.uid, identity.gid)
        mounts.append(process.Mount(term_file, spec.get("terminationMessagePath") or "/dev/termination-log"))
        mounts.append(process.Mount(self.agent.hosts_file(self), "/etc/hosts"))
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        c.cgroup = process.make_memory_cgroup(f"{self.uid}-{c.name}-{c.restart_count}", limit)
        c.proc = process.launch(
            process.LaunchSpec(
                argv=argv,
                env=env,
                working_dir=spec.get("workingDir") or "/",
                hostname=self._hostname(),
                mounts=mounts,
                log_file=self._log_file(c, c.restart_count),
                memory_cgroup=c.cgroup,
                keep_visible=self.agent.environment_roots,
                identity=identity,
            )
        )
        c.started_at = now()
        c.state = {"running": {"startedAt": c.started_at}}
        self.agent.event(self.pod, "Started", f"Started container {c.name}")
        return True

    def _container_config(self, c: ContainerState) -> tuple[dict[str, str], security.Identity] | None:
        """Retries like a kubelet while a referenced Secret/ConfigMap key is missing, or while the
        securityContext cannot be met."""
        while True:
            try:
                env = container_env(self.agent.core, self.pod, c.spec, self._base_env())
                return env, security.identity(self.pod, c.spec)
            except ContainerConfigError as e:
                self._set_waiting([c], "CreateContainerConfigError", str(e))
                self.agent.event(self.pod, "Failed", f"Error: {e}", warning=True)
            if self._stop_requested.wait(3):
                return None

    def _mounts(self, c: ContainerState, volumes: dict[str, Path]) -> list[process.Mount]:
        mounts = []
        for vm in c.spec.get("volumeMounts") or []:
            source = volumes[vm["name"]]
            if vm.get("subPath"):
                source = source / vm["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append(process.Mount(source, vm["mountPath"], bool(vm.get("readOnly"))))
        return mounts

    def own_host_names(self) -> list[str]:
        """What a kubelet writes for the pod itself: its FQDN (with a subdomain) and hostname."""
        names = [self._hostname()]
        subdomain = self.pod["spec"].get("subdomain")
        if subdomain:
            names.insert(0, f"{self._hostname()}.{subdomain}.{self.namespace}.svc.{hosts.CLUSTER_DOMAIN}")
        return names

    def write_hosts(self, peers: Iterable[hosts.PeerRecord]) -> Path:
        """(Re)writes the pod's hosts file in place; the agent calls it under its hosts lock."""
        self.hosts_path.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_in_place(
            self.hosts_path, hosts.render(self.pod_ip, self.own_host_names(), self.namespace, peers)
        )
        return self.hosts_path

    def _log_file(self, c: ContainerState, restart: int) -> Path:
        return self.dir / "logs" / c.name / f"{restart}.log"

    def _record_exit(self, c: ContainerState) -> None:
        if c.proc is None:
            return  # never started: _start already recorded why
        code = process.exit_code(c.proc.wait())
        oom = process.oom_killed(c.cgroup)
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        state: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": c.started_at,
            "finishedAt": now(),
        }
        message = self._termination_message(c, code)
        if message:
            state["message"] = message
        c.state = {"terminated": state}
        process.remove_cgroup(c.cgroup)
        c.cgroup = None

    def _termination_message(self, c: ContainerState, code: int) -> str:
        term_file = self.dir / "termination" / f"{c.name}-{c.restart_count}"
        try:
            text = term_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
        except OSError:
            text = ""
        if (
            not text.strip()
            and code != 0
            and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            lines = self._log_file(c, c.restart_count).read_text(errors="replace").splitlines()
            text = "\n".join(lines[-FALLBACK_LOG_LINES:])[-TERMINATION_MESSAGE_LIMIT:]
        return text

    def _set_waiting(self, containers: list[ContainerState], reason: str, message: str) -> None:
        for c in containers:
            c.state = {"waiting": {"reason": reason, "message": message}}
        self._push_status()

    # ---- termination ------------------------------------------------------------------------
    def _terminate_gracefully(self) -> None:
        deadline = time.monotonic() + self._grace_s
        while time.monotonic() < deadline:
            if all(c.proc is None or c.proc.poll() is not None for c in self.all_containers()):
                return
            time.sleep(0.1)
        self._kill_all()

    def _kill_all(self) -> None:
        for c in self.all_containers():
            if c.proc is not None and c.proc.poll() is None:
                process.signal_group(c.proc, signal.SIGKILL)
                c.proc.wait()
            elif c.proc is not None:
                # The main process is gone; make sure nothing it left behind keeps running.
                process.signal_group(c.proc, signal.SIGKILL)

    def _confirm_deletion(self) -> None:
        """What a kubelet does last: the pod object goes away once its processes are gone."""
        try:
            self.agent.core.delete_namespaced_pod(
                self.pod_name,
                self.namespace,
                grace_period_seconds=0,
                body={"preconditions": {"uid": self.uid}, "gracePeriodSeconds": 0},
            )
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: delete failed: %s", self.namespace, self.pod_name, e.reason)

    # ---- status -------------------------------------------------------------------------
    def _push_status(self, message: str | None = None) -> None:
        with self._status_lock:
            t = now()
            ready = self.phase == "Running" and all("running" in c.state for c in self.containers)

            def cond(type_: str, ok: bool) -> dict[str, Any]:
                return {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": t}

            status: dict[str, Any] = {
                "phase": self.phase,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": self.pod_ip,
                "podIPs": [{"ip": self.pod_ip}],
                "startTime": self.start_time,
                "conditions": [
                    cond("PodReadyToStartContainers", True),
                    cond("Initialized", self.initialized),
                    cond("ContainersReady", ready),
                    cond("Ready", ready),
                    cond("PodScheduled", True),
                ],
                "containerStatuses": [c.status(self.uid) for c in self.containers],
            }
            if self.init_containers:
                status["initContainerStatuses"] = [c.status(self.uid) for c in self.init_containers]
            if message:
                status["message"] = message
            for attempt in range(STATUS_ATTEMPTS):
                try:
                    self.agent.core.patch_namespaced_pod_status(
                        self.pod_name, self.namespace, {"status": status}
                    )
                except ApiException as e:
                    if e.status != 404:
                        log.warning(
                            "pod %s/%s: status update failed: %s", self.namespace, self.pod_name, e.reason
                        )
                except HTTPError as e:
                    # A pooled connection the API server closed while idle: the same patch, on a new
                    # connection (it is idempotent). A kubelet retries its status updates too.
                    if attempt == STATUS_ATTEMPTS - 1:
                        raise
                    log.info("pod %s/%s: status update retried: %s", self.namespace, self.pod_name, e)
                    time.sleep(0.2 * (attempt + 1))
                    continue
                return
