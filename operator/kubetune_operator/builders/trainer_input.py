"""FineTuneJob -> the document both Jobs read (kubetune_api.TrainerInput): the spec as it is, and the
run it belongs to. Pure: no conversion of the spec happens here; the trainer reads the API model."""

from __future__ import annotations

from kubetune_api import Checkpoint, FineTuneJob, RunContext, RunLayout, TrainerInput
from kubetune_api.layout import shared_bases_uri


def trainer_input(ftj: FineTuneJob) -> TrainerInput:
    run_id = ftj.spec_hash()
    return TrainerInput(
        spec=ftj.spec,
        run=RunContext(
            name=str(ftj.metadata.name),
            namespace=str(ftj.metadata.namespace),
            run_id=run_id,
            # Each spec revision writes under its own run id: a deterministic, never-overwritten path.
            output_root=run_layout(ftj).root,
            shared_bases_root=shared_bases_uri(ftj.spec.output.uri, ftj.spec.export.shared_base_uri),
            resume_from=resume_checkpoint(ftj),
        ),
    )


def run_layout(ftj: FineTuneJob) -> RunLayout:
    return RunLayout.of(
        ftj.spec.output.uri, str(ftj.metadata.namespace), str(ftj.metadata.name), ftj.spec_hash()
    )


def document(ftj: FineTuneJob) -> str:
    """The ConfigMap's JSON text; `TrainerInput.model_validate_json` reads it back unchanged."""
    return trainer_input(ftj).model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n"


def resume_checkpoint(ftj: FineTuneJob) -> Checkpoint | None:
    """The status's lastCheckpoint when it belongs to the current run.

    The run id alone is not enough: a stale trainer may report its last checkpoint after the status
    already names the new run, so the checkpoint must also lie under this run's checkpoints folder.
    """
    run_id = ftj.spec_hash()
    checkpoint = ftj.status.last_checkpoint
    if checkpoint is None or ftj.status.run_id != run_id:
        return None
    folder = run_layout(ftj).checkpoints
    return checkpoint if checkpoint.uri.startswith(f"{folder}/") else None
