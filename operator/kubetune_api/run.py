"""What the trainer and export Jobs receive: the FineTuneJob's spec, as the API model, and a small run
section the operator adds. The operator writes it into the run's ConfigMap; the trainer reads it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from kubetune_api.layout import RunLayout, shared_bases_uri
from kubetune_api.v1alpha1 import ApiModel, Checkpoint, FineTuneJobSpec, describe_errors


class RunContext(ApiModel):
    """Which run this is and where it writes."""

    name: str = Field(min_length=1, description="The FineTuneJob's name.")
    namespace: str = Field(min_length=1, description="The FineTuneJob's namespace.")
    run_id: str = Field(min_length=1, description="The spec hash; every file of the run is under it.")
    output_root: str = Field(
        min_length=1,
        description="Where this run's files go: <spec.output.uri>/<runId> (a local folder in local runs).",
    )
    shared_bases_root: str | None = Field(
        default=None,
        description="Where shared base ONNX models go: export.sharedBaseUri or <spec.output.uri>/onnx-bases "
        "(a local folder in local runs); unset: derived from the spec.",
    )
    resume_from: Checkpoint | None = Field(
        default=None,
        description="The newest checkpoint the operator had seen when it created the Job; the trainer "
        "resumes from the newest complete one it finds, which may be later.",
    )

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.output_root)


class TrainerInput(ApiModel):
    """The one document both Jobs read. Rank information comes from the launcher's environment
    (torchrun), since every pod of a run reads the same document."""

    spec: FineTuneJobSpec
    run: RunContext

    @property
    def shared_bases_root(self) -> str:
        """Where this run's shared base ONNX models are (layout.shared_bases_uri unless the run says)."""
        export = self.spec.export
        return self.run.shared_bases_root or shared_bases_uri(self.spec.output.uri, export.shared_base_uri)


class InvalidTrainerInput(ValueError):
    """The document does not validate against this version's API."""


def parse_trainer_input(data: str | bytes | dict) -> TrainerInput:
    try:
        if isinstance(data, dict):
            return TrainerInput.model_validate(data)
        return TrainerInput.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidTrainerInput(f"invalid trainer input: {describe_errors(exc)}") from exc


def load_trainer_input(path: Path) -> TrainerInput:
    return parse_trainer_input(Path(path).read_bytes())
