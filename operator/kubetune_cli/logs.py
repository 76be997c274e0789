"""`kubetune logs`: the trainer's (or the export's) log without knowing pod names.

The pods are found by the labels the operator puts on its children (kubetune_operator.builders.names,
which the CLI may not import: tests/cli/test_cli_logs.py pins the copies below to it) for the job and
its current run; of those the newest attempt is shown, and of a multi-node trainer the pod of a rank
(the Indexed Job's completion index, which the trainer passes to torchrun as --node-rank)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from kubernetes import client
from pydantic import ValidationError
from rich.console import Console

from kubetune_api import FineTuneJob
from kubetune_api.labels import (
    COMPLETION_INDEX,
    COMPONENT_LABEL,
    EXPORTER,
    FINETUNEJOB_LABEL,
    JOBSET_RESTART_LABEL,
    PLANNER,
    RUN_ID_LABEL,
    TRAINER,
)
from kubetune_cli.kube import EXIT_FAILED, CliError, Kube

FINISHED = ("Succeeded", "Failed")
POLL_SECONDS = 1.0

errors = Console(stderr=True)


@dataclass(frozen=True)
class Run:
    """What the command needs of the FineTuneJob: its current run and how many trainer pods it has."""

    name: str
    run_id: str
    nodes: int
    phase: str
    message: str
    dry_run: bool = False

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Run:
        status = obj.get("status") or {}
        spec = obj.get("spec") or {}
        run_id = status.get("runId")
        if not run_id:
            # No run observed yet: the run the spec asks for.
            try:
                run_id = FineTuneJob.from_k8s(obj).spec_hash()
            except ValidationError:
                run_id = ""
        return cls(
            name=obj["metadata"]["name"],
            run_id=str(run_id),
            nodes=int((spec.get("resources") or {}).get("nodes") or 1),
            phase=str(status.get("phase") or "Pending"),
            message=str(status.get("message") or ""),
            dry_run=bool(spec.get("dryRun")),
        )

    def state(self) -> str:
        return f"phase {self.phase}" + (f": {self.message}" if self.message else "")


def selector(run: Run, component: str) -> str:
    return f"{FINETUNEJOB_LABEL}={run.name},{RUN_ID_LABEL}={run.run_id},{COMPONENT_LABEL}={component}"


def meta(pod: client.V1Pod) -> client.V1ObjectMeta:
    assert pod.metadata is not None  # a listed pod always has its metadata
    return pod.metadata


def pod_name(pod: client.V1Pod) -> str:
    return str(meta(pod).name)


def rank_of(pod: client.V1Pod) -> int | None:
    meta_ = meta(pod)
    value = (meta_.labels or {}).get(COMPLETION_INDEX) or (meta_.annotations or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None and value.isdigit() else None


def attempt_key(pod: client.V1Pod) -> tuple[int, datetime, str]:
    """Newest last: a later JobSet restart, then a later replacement pod."""
    restart = (meta(pod).labels or {}).get(JOBSET_RESTART_LABEL, "0")
    created = meta(pod).creation_timestamp or datetime.min.replace(tzinfo=UTC)
    return (int(restart) if restart.isdigit() else 0, created, pod_name(pod))


def pods_of_rank(pods: list[client.V1Pod], run: Run, rank: int, component: str) -> list[client.V1Pod]:
    if component == EXPORTER or run.nodes == 1:
        return list(pods)
    return [p for p in pods if rank_of(p) == rank]


def started(pod: client.V1Pod, container: str) -> bool:
    """The container has run (so it has a log): running or terminated, now or before a restart."""
    for c in (pod.status.container_statuses if pod.status else None) or []:
        if c.name == container:
            state = c.state
            return bool(state and (state.running or state.terminated)) or bool(c.restart_count)
    return False


def waiting_reason(pod: client.V1Pod) -> str:
    for c in (pod.status.container_statuses if pod.status else None) or []:
        if c.state and c.state.waiting and c.state.waiting.reason:
            return str(c.state.waiting.reason)
    conditions = (pod.status.conditions if pod.status else None) or []
    unscheduled = next((c for c in conditions if c.type == "PodScheduled" and c.status == "False"), None)
    if unscheduled is not None:
        return f"unschedulable: {unscheduled.message or unscheduled.reason}"
    return str(pod.status.phase if pod.status else "Pending")


class Finder:
    """The pod to read: found by labels, optionally waited for (with -f)."""

    def __init__(self, cluster: Kube, name: str, component: str, rank: int) -> None:
        self.cluster, self.name, self.component, self.rank = cluster, name, component, rank
        self.announced = False

    def run(self) -> Run:
        return Run.of(self.cluster.get_job(self.name))

    def candidates(self, run: Run) -> tuple[list[client.V1Pod], list[client.V1Pod]]:
        """(all pods of this stage of the run, those of the rank), oldest attempt first."""
        found = self.cluster.call(
            lambda: (
                self.cluster.core.list_namespaced_pod(
                    self.cluster.namespace, label_selector=selector(run, self.component)
                ).items
            ),
            f"pods of FineTuneJob {self.cluster.namespace}/{self.name}",
        )
        found = sorted(found, key=attempt_key)
        return found, pods_of_rank(found, run, self.rank, self.component)

    def find(self, follow: bool) -> tuple[Run, client.V1Pod, int]:
        """The newest attempt's pod, and how many attempts there were."""
        while True:
            run = self.run()
            if run.dry_run:
                # A dry run has one pod, the plan pod: that is the log to show.
                if self.component == EXPORTER:
                    raise CliError(f"{self.name} is a dry run (spec.dryRun): it exports nothing", 2)
                self.component = PLANNER
            self.check_rank(run)
            everything, pods = self.candidates(run)
            if pods:
                pod = pods[-1]
                if started(pod, self.component) or not follow:
                    return run, pod, len(pods)
                self.wait_note(f"pod {pod_name(pod)} to start ({waiting_reason(pod)})")
            elif not follow or run.phase in FINISHED:
                raise CliError(self.no_pods(run, everything), EXIT_FAILED)
            else:
                self.wait_note(f"the {self.stage()} pod of {self.name} ({run.state()})")
            time.sleep(POLL_SECONDS)

    def check_rank(self, run: Run) -> None:
        if self.component == EXPORTER and self.rank != 0:
            raise CliError(f"--rank {self.rank}: the export Job of {self.name} has one pod (rank 0)", 2)
        if not 0 <= self.rank < run.nodes:
            raise CliError(
                f"--rank {self.rank}: FineTuneJob {self.cluster.namespace}/{self.name} trains on {run.nodes} "
                f"node{'s' if run.nodes > 1 else ''} (spec.resources.nodes), so its ranks are "
                + ("0" if run.nodes == 1 else f"0 to {run.nodes - 1}"),
                2,
            )

    def stage(self) -> str:
        return {EXPORTER: "export", PLANNER: "plan"}.get(self.component, "trainer")

    def no_pods(self, run: Run, everything: list[client.V1Pod]) -> str:
        where = f"FineTuneJob {self.cluster.namespace}/{self.name}"
        if everything:  # pods of other ranks exist, not of this one (yet)
            return (
                f"{where} has no {self.stage()} pod of rank {self.rank} in run {run.run_id} yet "
                f"({run.state()})"
            )
        if run.phase in FINISHED:
            gone = (
                "its pods were deleted (the Job's TTL or a manual delete)"
                if self.component == TRAINER or run.phase == "Succeeded"
                else "the run never reached the export"
            )
            return f"{where} has no {self.stage()} pods of run {run.run_id}: {gone} ({run.state()})"
        return f"{where} has no {self.stage()} pods yet ({run.state()}); -f waits for them"

    def wait_note(self, what: str) -> None:
        if not self.announced:
            errors.print(f"waiting for {what} ...", highlight=False)
            self.announced = True


def header(run: Run, pod: client.V1Pod, attempts: int, component: str, rank: int) -> str:
    parts = [component]
    if component == TRAINER and run.nodes > 1:
        parts.append(f"rank {rank} of {run.nodes}")
    parts.append(f"attempt {attempts}" + (f" of {attempts}" if attempts > 1 else ""))
    parts.append(str(pod.status.phase if pod.status else "Unknown"))
    return f"==> pod {pod_name(pod)} ({', '.join(parts)}, run {run.run_id}) <=="


def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The FineTuneJob.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the log until the container ends.")
    ] = False,
    export: Annotated[
        bool, typer.Option("--export", help="The export Job's log instead of the trainer's.")
    ] = False,
    rank: Annotated[int, typer.Option(help="Multi-node trainer: the pod of this rank (node).")] = 0,
    previous: Annotated[
        bool, typer.Option("--previous", "-p", help="The log of the container's previous run in the pod.")
    ] = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
) -> None:
    """The trainer's log (or the export's) of the job's current run: the newest attempt's pod, named on
    stderr."""
    from kubetune_cli.main import kube

    cluster = kube(ctx)
    finder = Finder(cluster, name, EXPORTER if export else TRAINER, rank)
    run, pod, attempts = finder.find(follow and not previous)
    component = finder.component  # the plan pod's, for a dry run
    errors.print(header(run, pod, attempts, component, rank), highlight=False, markup=False)
    target = pod_name(pod)
    if not started(pod, component):
        raise CliError(
            f"pod {target} has not started yet ({waiting_reason(pod)}); -f waits for it", EXIT_FAILED
        )
    response = cluster.call(
        lambda: cluster.core.read_namespaced_pod_log(
            target,
            cluster.namespace,
            container=component,
            follow=follow,
            previous=previous,
            tail_lines=tail,
            _preload_content=False,
        ),
        f"the log of pod {cluster.namespace}/{target}",
    )
    out = sys.stdout.buffer
    try:
        for chunk in response.stream(64 * 1024):
            out.write(chunk)
            out.flush()
    finally:
        response.release_conn()


def register(app: typer.Typer) -> None:
    """Adds `logs`."""
    app.command()(logs)
