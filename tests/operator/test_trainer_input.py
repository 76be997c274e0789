"""builders/trainer_input.py and the ConfigMap: the one document both Jobs read, the spec unchanged and
the run it belongs to, which the API's TrainerInput reads back as it was written."""

from __future__ import annotations

from typing import Any

import pytest
from operator_cases import NAMESPACE, Edit, delete, serialize, set_, tiny

from kubetune_api import FineTuneJob, RunContext, TrainerInput, parse_trainer_input
from kubetune_operator.builders import jobs, names
from kubetune_operator.builders.trainer_input import trainer_input


def config_document(ftj: FineTuneJob) -> str:
    data: dict[str, str] = serialize(jobs.config_map(ftj))["data"]
    assert set(data) == {names.CONFIG_KEY}
    return data[names.CONFIG_KEY]


def test_configmap_holds_the_trainer_input() -> None:
    ftj = tiny()
    read_back = TrainerInput.model_validate_json(config_document(ftj))
    assert read_back == trainer_input(ftj)
    assert read_back.spec == ftj.spec  # the spec as it is: the trainer reads the API model
    assert read_back.run == RunContext(
        name="tiny",
        namespace=NAMESPACE,
        run_id=ftj.spec_hash(),
        # Each spec revision of each FineTuneJob gets its own prefix under spec.output.uri.
        output_root=f"s3://kubetune-dev/runs/tiny/{NAMESPACE}/tiny/{ftj.spec_hash()}",
        # Shared by every job writing under spec.output.uri (export.sharedBaseUri unset).
        shared_bases_root="s3://kubetune-dev/runs/tiny/onnx-bases",
    )
    assert read_back.spec.spec_hash() == ftj.spec_hash()
    # Unset fields are left out rather than written as null.
    assert "null" not in config_document(ftj)


SPEC_VARIANTS = {
    "qlora": (set_("spec.method", "qlora"),),
    "qlora-4bit-options": (
        set_("spec.method", "qlora"),
        set_("spec.quantization", {"quantType": "fp4", "doubleQuant": False, "computeDtype": "fp32"}),
    ),
    "qlora-8bit": (set_("spec.method", "qlora"), set_("spec.quantization", {"bits": 8})),
    "full": (set_("spec.method", "full"), delete("spec.lora")),
    "dora": (set_("spec.lora.useDora", True),),
    "target-modules": (set_("spec.lora.targetModules", ["q_proj", "v_proj"]),),
    "no-template": (delete("spec.dataset.textTemplate"),),
    "format-text": (set_("spec.dataset.format", "text"), delete("spec.dataset.textTemplate")),
    "chat": (set_("spec.dataset.format", "chat"), delete("spec.dataset.textTemplate")),
    "eval-uri": (
        delete("spec.dataset.evalRatio"),
        set_("spec.dataset.evalUri", "s3://kubetune-dev/d/eval.jsonl"),
    ),
    "epochs-warmup": (
        delete("spec.training.maxSteps"),
        set_("spec.training.epochs", 2),
        set_("spec.training.warmupRatio", 0.1),
    ),
    "precision-auto-gpu": (
        set_("spec.training.precision", "auto"),
        set_("spec.resources.gpusPerNode", 1),
    ),
    "packing": (set_("spec.training.packing", True),),
    "evaluation": (
        set_("spec.training.evalSteps", 5),
        set_("spec.training.saveSteps", 10),
        set_(
            "spec.evaluation",
            {"metrics": ["f1", "rougeL"], "samples": 16, "earlyStopping": {"metric": "f1", "patience": 2}},
        ),
    ),
    "int4-cuda": (
        set_(
            "spec.export.targets",
            [
                {
                    "precision": "int4",
                    "executionProvider": "cuda",
                    "int4": {"algorithm": "rtn", "accuracyLevel": 4},
                },
                {"precision": "fp16", "executionProvider": "cuda"},
            ],
        ),
    ),
    "onnx-adapter": (
        set_("spec.export.adapter", True),
        set_("spec.export.sharedBaseUri", "s3://bases/smollm2"),
    ),
    "quality-gate": (set_("spec.export.gate", [{"metric": "exactMatch", "min": 0.9}]),),
    "base-model-revision": (set_("spec.baseModel.revision", "abc123"),),
    # Implemented by the trainer now; the operator used to refuse them.
    "onnx-disabled": (set_("spec.export.targets", []),),
    "no-merged-model": (set_("spec.export.mergedModel", False),),
    "export-disabled": (set_("spec.export.enabled", False),),
    "same-secret-everywhere": (
        set_("spec.baseModel.credentialsSecretRef", {"name": "kubetune-s3"}),
        set_("spec.dataset.credentialsSecretRef", {"name": "kubetune-s3"}),
    ),
    "ambient-credentials": (delete("spec.output.credentialsSecretRef"),),
}


@pytest.mark.parametrize("edits", SPEC_VARIANTS.values(), ids=SPEC_VARIANTS.keys())
def test_every_spec_reaches_the_trainer_unchanged(edits: tuple[Edit, ...]) -> None:
    ftj = tiny(*edits)
    read_back = parse_trainer_input(config_document(ftj))
    assert read_back.spec == ftj.spec
    assert read_back.run.run_id == ftj.spec_hash() == read_back.spec.spec_hash()


@pytest.mark.parametrize(
    ("status", "resumes"),
    [
        ({}, False),
        ({"lastCheckpoint": "own"}, True),
        ({"lastCheckpoint": "own", "runId": "0123456789ab"}, False),  # another run's status
        ({"lastCheckpoint": "foreign"}, False),  # reported late by a stale trainer
    ],
    ids=["none", "own", "other-run", "foreign-uri"],
)
def test_resume_from_is_the_current_runs_last_checkpoint(status: dict[str, Any], resumes: bool) -> None:
    run_id = tiny().spec_hash()
    uris = {
        "own": f"s3://kubetune-dev/runs/tiny/{NAMESPACE}/tiny/{run_id}/checkpoints/checkpoint-40",
        "foreign": f"s3://kubetune-dev/runs/tiny/{NAMESPACE}/tiny/000000000000/checkpoints/checkpoint-40",
    }
    if "lastCheckpoint" in status:
        status = {
            "runId": run_id,
            **status,
            "lastCheckpoint": {"step": 40, "uri": uris[status["lastCheckpoint"]]},
        }
    ftj = tiny(set_("status", status))
    resume_from = parse_trainer_input(config_document(ftj)).run.resume_from
    assert resume_from == (ftj.status.last_checkpoint if resumes else None)
    assert (resume_from is not None) is resumes
