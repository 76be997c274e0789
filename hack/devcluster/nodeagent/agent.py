"""The node agent: registers nodes, keeps them alive, and dispatches pods to runners."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from . import hosts, logserver, nodes
from .runner import PodRunner, now

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
PEERS_SYNC_TIMEOUT_SECONDS = 10
POD_IP_NETWORK = ipaddress.ip_network("127.1.0.0/16")


class NodeAgent:
    def __init__(
        self,
        kubeconfig: Path,
        state_dir: Path,
        apiserver_host: str,
        apiserver_port: int,
        ca_file: Path,
        kubelet_port_base: int,
    ) -> None:
        self.api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self.events = client.EventsV1Api(self.api)
        self.state_dir = state_dir
        self.pvc_root = state_dir / "pvcs"
        self.apiserver_host = apiserver_host
        self.apiserver_port = apiserver_port
        self.ca_file = ca_file
        self.nodes = nodes.default_nodes(kubelet_port_base)
        self.node_names = {n.name for n in self.nodes}
        # Pods run with the project's own environment first on PATH: images are never pulled.
        self.pod_path = os.pathsep.join(
            [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
        )
        # What a pod's command runs from: this checkout (with its .venv) and the Python it links to.
        self.environment_roots = (Path(__file__).resolve().parents[3], Path(sys.base_prefix).resolve())
        self.runners: dict[str, PodRunner] = {}
        self._by_name: dict[tuple[str, str], PodRunner] = {}
        self._lock = threading.Lock()
        self._used_ips: set[str] = set()
        self._stopping = threading.Event()
        # What cluster DNS would serve for headless Services: Services by (namespace, name), pods
        # with a hostname and subdomain by uid, and the records they make.
        self._headless: dict[tuple[str, str], hosts.HeadlessService] = {}
        self._named_pods: dict[str, hosts.NamedPod] = {}
        self._peers: list[hosts.PeerRecord] = []
        self._services_synced = threading.Event()
        self._hosts_lock = threading.Lock()  # taken before _lock, never after it

    # ---- lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        for spec in self.nodes:
            nodes.register(self.core, spec)
            nodes.renew_lease(self.core, self.coord, spec)
            logserver.serve(self, spec.kubelet_port, self.ca_file, self.state_dir / "pki", spec.name)
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._services_loop, name="services", daemon=True).start()
        # A pod's hosts file must hold the peers already known when it starts.
        if not self._services_synced.wait(PEERS_SYNC_TIMEOUT_SECONDS):
            log.warning("Services not listed yet; hosts files will catch up")
        log.info("node agent ready: %s", ", ".join(sorted(self.node_names)))
        while not self._stopping.is_set():
            try:
                self._watch_pods()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                if not self._stopping.is_set():
                    log.warning("pod watch interrupted (%s); re-listing", e)
                    time.sleep(1)

    def shutdown(self) -> None:
        """Stop every pod process; the pods themselves stay (like a node going away)."""
        self._stopping.set()
        with self._lock:
            runners = list(self.runners.values())
        for r in runners:
            r.stop(grace_seconds=5)
        for r in runners:
            r.join(timeout=10)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            for spec in self.nodes:
                try:
                    nodes.renew_lease(self.core, self.coord, spec)
                    nodes.heartbeat_status(self.core, spec)
                except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                    log.warning("heartbeat of %s failed: %s", spec.name, e)

    def _events(self, list_call: Any, listing: dict[str, Any], **selectors: Any) -> Iterator[dict[str, Any]]:
        """Watch events after `listing`, until the agent stops or the watch must re-list (410 Gone)."""
        stream = watch.Watch().stream(
            list_call,
            resource_version=listing["metadata"]["resourceVersion"],
            timeout_seconds=300,
            allow_watch_bookmarks=True,
            **selectors,
        )
        for event in stream:
            if self._stopping.is_set() or event["type"] == "ERROR":
                return
            if event["type"] != "BOOKMARK":
                yield event

    # ---- headless Service names (the cluster DNS of a real cluster) ----------------------
    def _services_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._watch_services()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                if not self._stopping.is_set():
                    log.warning("Service watch interrupted (%s); re-listing", e)
                    time.sleep(1)

    def _watch_services(self) -> None:
        list_services = self.core.list_service_for_all_namespaces
        headless = "spec.clusterIP=None"
        listing = list_services(field_selector=headless, _preload_content=False)
        body = json.loads(listing.data)  # type: ignore[attr-defined]  # raw response (no preload)
        with self._hosts_lock:
            self._headless = {}
            for service in body["items"]:
                info = hosts.headless_service(service)
                if info is not None:
                    self._headless[_key(service)] = info
            self._update_peers()
        self._services_synced.set()
        for event in self._events(list_services, body, field_selector=headless):
            service = event["raw_object"]
            info = None if event["type"] == "DELETED" else hosts.headless_service(service)
            with self._hosts_lock:
                if info is None:
                    self._headless.pop(_key(service), None)
                else:
                    self._headless[_key(service)] = info
                self._update_peers()

    def _track_named_pods(
        self, pods: list[dict[str, Any]], *, listing: bool = False, deleted: bool = False
    ) -> None:
        """Pods (a whole listing, or one watch event) as they change the headless Service records."""
        with self._hosts_lock:
            if listing:
                self._named_pods = {}
            for pod in pods:
                uid = pod["metadata"]["uid"]
                named = None if deleted else hosts.named_pod(pod)
                if named is None:
                    self._named_pods.pop(uid, None)
                else:
                    self._named_pods[uid] = named
            self._update_peers()

    def _update_peers(self) -> None:
        """Recomputes the records; rewrites running pods' hosts files if they changed (holds _hosts_lock)."""
        peers = hosts.records(self._headless, self._named_pods.values())
        if peers == self._peers:
            return
        self._peers = peers
        self._refresh_hosts()

    def _refresh_hosts(self) -> None:
        """Rewrites the hosts file of every running pod (the caller holds _hosts_lock)."""
        peers = self._peers
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            if runner.is_alive() and runner.hosts_path.exists():
                try:
                    runner.write_hosts(peers)
                except OSError as e:
                    log.warning("pod %s/%s: hosts file: %s", runner.namespace, runner.pod_name, e)

    def hosts_file(self, runner: PodRunner) -> Path:
        """The pod's hosts file, written with the peers known now (a runner calls it to start)."""
        with self._hosts_lock:
            return runner.write_hosts(self._peers)

    # ---- pods ---------------------------------------------------------------------------
    def _watch_pods(self) -> None:
        listing = self.core.list_pod_for_all_namespaces(_preload_content=False)
        body = json.loads(listing.data)  # type: ignore[attr-defined]  # raw response (no preload)
        self._track_named_pods(body["items"], listing=True)
        self._remove_orphaned_pod_dirs(body["items"])
        for pod in body["items"]:
            self._on_pod("ADDED", pod, initial=True)
        for event in self._events(self.core.list_pod_for_all_namespaces, body):
            self._track_named_pods([event["raw_object"]], deleted=event["type"] == "DELETED")
            self._on_pod(event["type"], event["raw_object"])

    def _on_pod(self, event_type: str, pod: dict[str, Any], initial: bool = False) -> None:
        if pod["spec"].get("nodeName") not in self.node_names:
            return
        meta, status = pod["metadata"], pod.get("status") or {}
        uid = meta["uid"]
        with self._lock:
            runner = self.runners.get(uid)
        if event_type == "DELETED":
            if runner is not None:
                runner.forgotten.set()
                runner.stop(grace_seconds=0)
                with self._lock:
                    self.runners.pop(uid, None)
                if not runner.is_alive():
                    shutil.rmtree(runner.dir, ignore_errors=True)
            else:
                self._remove_pod_dirs({uid})
            return
        deleting = meta.get("deletionTimestamp") is not None
        if runner is not None:
            if deleting and runner.is_alive():
                runner.stop(float(meta.get("deletionGracePeriodSeconds") or 0))
            elif deleting:
                self._confirm_deletion(pod)  # the runner has finished; only the object is left
            return
        terminal = status.get("phase") in ("Succeeded", "Failed")
        if deleting and (terminal or not self._was_started(status)):
            self._confirm_deletion(pod)
            return
        if terminal:
            self._remember_ip(status)
            return
        if initial and self._was_started(status):
            # Processes from before this agent started are gone (a node reboot, in effect).
            self._fail_lost_pod(pod)
            return
        runner = PodRunner(self, pod, status.get("podIP") or self._allocate_ip())
        with self._lock:
            self.runners[uid] = runner
            self._by_name[(meta["namespace"], meta["name"])] = runner
        runner.start()
        if deleting:
            runner.stop(float(meta.get("deletionGracePeriodSeconds") or 0))

    def _pod_dirs(self) -> dict[str, Path]:
        """Pod folders by uid; a folder is named namespace_name_uid."""
        root = self.state_dir / "pods"
        return {d.name.rsplit("_", 1)[-1]: d for d in root.iterdir()} if root.is_dir() else {}

    def _remove_pod_dirs(self, uids: set[str]) -> None:
        for uid, folder in self._pod_dirs().items():
            if uid in uids:
                shutil.rmtree(folder, ignore_errors=True)

    def _remove_orphaned_pod_dirs(self, listed: list[dict[str, Any]]) -> None:
        """A kubelet's housekeeping: folders of pods deleted while no watch saw it (the agent was
        down, or the watch re-listed) would otherwise fill the disk with their volumes and logs."""
        live = {p["metadata"]["uid"] for p in listed}
        with self._lock:
            live |= set(self.runners)
        folders = self._pod_dirs()
        orphaned = set(folders) - live
        if orphaned:
            log.info("removing the folders of %d deleted pods", len(orphaned))
            self._remove_pod_dirs(orphaned)
        for pod in listed:
            finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            folder = folders.get(pod["metadata"]["uid"])
            if finished and folder is not None:
                shutil.rmtree(folder / "volumes", ignore_errors=True)

    @staticmethod
    def _was_started(status: dict[str, Any]) -> bool:
        return any(
            "running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {})
            for cs in status.get("containerStatuses") or []
        )

    def _fail_lost_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        lost = {
            "terminated": {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the node agent restarted",
                "finishedAt": now(),
            }
        }
        statuses = [
            {**cs, "state": lost, "ready": False, "started": False}
            for cs in (pod.get("status") or {}).get("containerStatuses") or []
        ]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"],
                meta["namespace"],
                {
                    "status": {
                        "phase": "Failed",
                        "containerStatuses": statuses,
                        "message": "pod processes were lost when the node agent restarted",
                    }
                },
            )
        except ApiException as e:
            log.warning("could not fail lost pod %s: %s", meta["name"], e.reason)

    def _confirm_deletion(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body={"preconditions": {"uid": meta["uid"]}, "gracePeriodSeconds": 0},
            )
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("could not delete pod %s: %s", meta["name"], e.reason)

    def runner_by_name(self, namespace: str, name: str) -> PodRunner | None:
        with self._lock:
            return self._by_name.get((namespace, name))

    def _remember_ip(self, status: dict[str, Any]) -> None:
        if status.get("podIP"):
            with self._lock:
                self._used_ips.add(status["podIP"])

    def _allocate_ip(self) -> str:
        """Every pod gets its own loopback address, so pods can bind the same port side by side."""
        with self._lock:
            for address in POD_IP_NETWORK.hosts():
                ip = str(address)
                if ip not in self._used_ips:
                    self._used_ips.add(ip)
                    return ip
        raise RuntimeError("pod IP pool exhausted")

    # ---- events -------------------------------------------------------------------------
    def event(self, pod: dict[str, Any], reason: str, note: str, warning: bool = False) -> None:
        meta = pod["metadata"]
        t = dt.datetime.now(dt.UTC)
        body = client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            event_time=t,
            reporting_controller="kubetune.dev/node-agent",
            reporting_instance=pod["spec"].get("nodeName", "node-agent"),
            action=reason,
            reason=reason,
            note=note[:1024],
            type="Warning" if warning else "Normal",
            regarding=client.V1ObjectReference(
                api_version="v1", kind="Pod", name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]
            ),
        )
        try:
            self.events.create_namespaced_event(meta["namespace"], body)
        except ApiException as e:
            log.debug("event not recorded: %s", e.reason)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]
