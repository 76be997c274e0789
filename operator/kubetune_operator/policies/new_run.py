"""New run: a spec change gives a new run id. The previous run's Jobs are deleted, and nothing of it
(results, start time, the trainer's progress and checkpoint) carries over to the new one."""

from __future__ import annotations

from kubetune_api import Checkpoint, FineTuneJob, Phase
from kubetune_operator.builders.trainer_input import resume_checkpoint
from kubetune_operator.observation import Observed
from kubetune_operator.policies.decision import Action, Decision


def replace_stale(ftj: FineTuneJob, observed: Observed) -> Decision | None:
    """Delete the children of another run id, before anything of the current run happens."""
    run_id = ftj.spec_hash()
    children = (observed.trainer, observed.exporter, observed.planner)
    if all(child is None or child.run_id == run_id for child in children):
        return None
    return Decision(
        Phase.PENDING,
        "SpecChanged",
        "the spec changed: replacing the Jobs of the previous run",
        Action.DELETE_STALE,
    )


def same_run(ftj: FineTuneJob, decision: Decision) -> bool:
    """The status already describes the run decided on: its results and start time carry over."""
    return ftj.status.run_id == ftj.spec_hash() and decision.action != Action.DELETE_STALE


def clear_trainer_fields(ftj: FineTuneJob, decision: Decision) -> bool:
    """What the trainer reported (progress, lastCheckpoint) belongs to another run: the run changed, or
    a stale trainer reported a checkpoint after the status had moved on to the new run."""
    status = ftj.status
    if status.run_id is not None and not same_run(ftj, decision):
        return True
    return status.last_checkpoint is not None and resume_from(ftj) is None


def resume_from(ftj: FineTuneJob) -> Checkpoint | None:
    """The checkpoint of the current run that a replacement trainer pod resumes from."""
    return resume_checkpoint(ftj)
