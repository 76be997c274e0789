"""The contract between the operator and the trainer: one schema, one owner per status field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_cases import tiny

from kubetune_api import (
    FineTuneJob,
    FineTuneJobStatus,
    Progress,
    RunContext,
    TrainerInput,
    TrainerReport,
    parse_trainer_input,
)
from kubetune_api.run import InvalidTrainerInput
from kubetune_api.v1alpha1 import DEFAULT_EPOCHS


def _spec(edit: dict[str, Any] | None = None) -> Any:
    obj = tiny()
    for key, value in (edit or {}).items():
        section, _, field = key.partition(".")
        if value is None:
            obj["spec"][section].pop(field, None)
        else:
            obj["spec"][section][field] = value
    return FineTuneJob.from_k8s(obj).spec


def test_without_eval_uri_or_ratio_no_row_is_held_out() -> None:
    """The CRD documents that every row trains when neither is set; the trainer reads the same model."""
    spec = _spec({"dataset.evalRatio": None})
    assert spec.dataset.eval_ratio is None and spec.dataset.eval_uri is None
    assert not spec.dataset.has_eval_data
    sent = TrainerInput(spec=spec, run=RunContext(name="t", namespace="n", run_id="r", output_root="/o"))
    received = parse_trainer_input(sent.model_dump_json(by_alias=True))
    assert received.spec.dataset.eval_ratio is None
    assert received == sent


def test_trainer_input_rejects_fields_outside_the_api() -> None:
    good = TrainerInput(
        spec=_spec(), run=RunContext(name="t", namespace="n", run_id="r", output_root="/o")
    ).model_dump(mode="json", by_alias=True)
    good["spec"]["training"]["generationEvalSamples"] = 2
    with pytest.raises(InvalidTrainerInput, match="generationEvalSamples"):
        parse_trainer_input(json.dumps(good))


def test_a_spec_without_training_gets_one_epoch() -> None:
    obj = tiny()
    del obj["spec"]["training"]
    spec = FineTuneJob.from_k8s(obj).spec
    assert spec.training.max_steps is None and spec.training.length_epochs == DEFAULT_EPOCHS == 1.0


def test_auto_precision_is_resolved_once() -> None:
    assert _spec({"training.precision": "auto"}).training_precision == "fp32"  # gpusPerNode 0
    obj = tiny()
    obj["spec"]["training"]["precision"] = "auto"
    obj["spec"]["resources"]["gpusPerNode"] = 1
    assert FineTuneJob.from_k8s(obj).spec.training_precision == "bf16"


def test_status_fields_have_one_owner() -> None:
    trainer_fields = set(TrainerReport.model_fields)
    assert trainer_fields == {"progress", "last_checkpoint"} == FineTuneJobStatus.TRAINER_FIELDS
    status = FineTuneJobStatus(progress=Progress(step=3), metrics={"evalLoss": 1.0})
    operator_part = status.operator_fields()
    assert "progress" not in operator_part and "lastCheckpoint" not in operator_part
    assert operator_part["metrics"] == {"evalLoss": 1.0}


def test_trainer_patch_reports_only_what_is_set_and_rounds_losses() -> None:
    patch = TrainerReport(progress=Progress(step=2, loss=2.5479415893554687, eval_loss=1.0)).status_patch()
    assert patch == {"status": {"progress": {"step": 2, "loss": 2.5479, "evalLoss": 1.0, "metrics": {}}}}
