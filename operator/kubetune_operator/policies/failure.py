"""Failure classification: why a child pod stopped, from its exit code and its pod's conditions, in
the same order as the Jobs' podFailurePolicy (builders/jobs.py) applies its rules, and in words a
person can act on."""

from __future__ import annotations

from enum import StrEnum

from kubetune_api.exit_codes import PERMANENT, ExitCode, describe_exit_code
from kubetune_operator.observation import ChildJob, ContainerOutcome

OOM_KILLED = "OOMKilled"
DEADLINE_EXCEEDED = "DeadlineExceeded"
# The export's reason when it missed export.gate (exit code QUALITY_GATE).
QUALITY_GATE_FAILED = "QualityGateFailed"


class FailureKind(StrEnum):
    # Preempted, evicted, drained or its node lost (condition DisruptionTarget): the podFailurePolicy
    # ignores it, whatever the exit code.
    DISRUPTED = "Disrupted"
    # The kernel killed the container for exceeding its memory limit: counted, and a retry usually
    # fails the same way.
    OOM_KILLED = "OOMKilled"
    # The trainer stopped on SIGTERM after a checkpoint (exit code 7): ignored, the replacement resumes.
    PREEMPTED = "Preempted"
    # An error a retry cannot fix (invalid config, data, storage, model, export): fails the Job at once.
    PERMANENT = "Permanent"
    # Anything else: counted against backoffLimit and retried.
    RETRIABLE = "Retriable"

    @property
    def counted(self) -> bool:
        """Counts against the Job's backoffLimit."""
        return self not in (FailureKind.DISRUPTED, FailureKind.PREEMPTED)


def classify(outcome: ContainerOutcome) -> FailureKind:
    """The kind of a container's non-zero exit."""
    if outcome.disruption:
        return FailureKind.DISRUPTED
    if outcome.reason == OOM_KILLED:
        return FailureKind.OOM_KILLED
    if outcome.exit_code == ExitCode.PREEMPTED:
        return FailureKind.PREEMPTED
    if outcome.exit_code in PERMANENT:
        return FailureKind.PERMANENT
    return FailureKind.RETRIABLE


def describe(outcome: ContainerOutcome) -> str:
    """`exit code 3 (dataset error): <the last line of the termination message>`."""
    kind = classify(outcome)
    if kind == FailureKind.OOM_KILLED:
        text = "OOM-killed"
    else:
        meaning = describe_exit_code(outcome.exit_code)
        text = f"exit code {outcome.exit_code}" + (f" ({meaning})" if meaning else "")
    if kind == FailureKind.DISRUPTED:
        text += f", pod disrupted ({outcome.disruption})"
    lines = outcome.message.strip().splitlines()
    return f"{text}: {lines[-1]}" if lines else text


def failure_message(stage: str, job: ChildJob) -> str:
    """Why a failed child failed, in the words of its pod (not just BackoffLimitExceeded)."""
    failures = [o for o in job.outcomes if o.exit_code != 0]
    counted = [o for o in failures if classify(o).counted]
    # A disrupted or preempted pod never fails a Job: the last one that counted is the cause.
    last = max(counted or failures, key=lambda o: o.finished_at, default=None)
    if last is None or job.failed_reason == DEADLINE_EXCEEDED:
        # The Job's own condition is the cause: no pod ran, or the deadline stopped a healthy one.
        text = f"{stage} Job {job.name} failed: " + ": ".join(
            part for part in (job.failed_reason, job.failed_message) if part
        )
        return f"{text}; last pod: {describe(last)}" if last is not None else text
    if classify(last) == FailureKind.OOM_KILLED:
        return (
            f"{stage} was OOM-killed (pod {last.pod}): raise spec.resources.memory, or lower "
            "training.batchSize or training.maxSeqLength"
        )
    return f"{stage} failed: {describe(last)}"


def retry_note(stage: str, job: ChildJob) -> str | None:
    """Why an unfinished child has no running pod after a failure; None when nothing failed."""
    last = job.last_failure()
    if last is not None and not classify(last).counted:
        return f"replacing the {stage} pod {last.pod} ({describe(last)}); not counted as a failure"
    if not job.failed:
        return None
    note = f"retrying the {stage} after {job.failed} failed attempt(s)"
    return f"{note}; last: {describe(last)}" if last is not None else note


def missed_quality_gate(job: ChildJob) -> bool:
    """The export's last pod stopped on export.gate (its files are under rejected/)."""
    last = max((o for o in job.outcomes if o.exit_code != 0), key=lambda o: o.finished_at, default=None)
    return last is not None and last.exit_code == ExitCode.QUALITY_GATE
