"""The pydantic models: parsing, validation errors, helpers the operator relies on."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

import pytest
from api_cases import BAD_SPECS, BadSpec, tiny
from pydantic import BaseModel, ValidationError

from kubetune_api import (
    FineTuneJob,
    FineTuneJobSpec,
    FineTuneJobStatus,
    Method,
    Phase,
    describe_errors,
    v1alpha1,
)
from kubetune_api.cel import Cel


@pytest.mark.parametrize("case", BAD_SPECS, ids=lambda c: c.id)
def test_bad_spec_is_rejected(case: BadSpec) -> None:
    with pytest.raises(ValidationError) as exc:
        FineTuneJob.from_k8s(case.apply())
    found = {".".join(str(p) for p in e["loc"]): e["msg"] for e in exc.value.errors()}
    assert case.loc in found, f"expected an error at {case.loc!r}, got {found}"
    assert case.pydantic in found[case.loc]


def test_describe_errors_is_one_readable_line() -> None:
    obj = tiny()
    obj["spec"]["training"]["epochs"] = 2
    obj["spec"]["lora"]["r"] = 0
    with pytest.raises(ValidationError) as exc:
        FineTuneJob.from_k8s(obj)
    text = describe_errors(exc.value)
    assert "spec.lora.r: Input should be greater than or equal to 1" in text
    assert "spec.training: training.maxSteps and training.epochs are mutually exclusive" in text
    assert "\n" not in text


def test_minimal_spec_gets_the_defaults() -> None:
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "s3://models/smollm2/"},
            "dataset": {"trainUri": "s3://data/train.jsonl"},
            "lora": {},
            "training": {"epochs": 1},
            "output": {"uri": "s3://runs/x"},
        }
    )
    assert spec.method is Method.LORA
    assert spec.lora is not None and (spec.lora.r, spec.lora.alpha, spec.lora.target_modules) == (16, 32, [])
    assert (spec.resources.gpus_per_node, spec.resources.nodes) == (1, 1)
    assert spec.export.enabled and [t.name for t in spec.export.targets] == ["int4-cpu"]
    assert spec.export.gate == [] and not spec.export.adapter and spec.export.eval_samples == 64
    assert spec.backoff_limit == 2 and spec.suspend is False
    assert spec.output.credentials_secret_ref is None


def test_qlora_accepts_quantization() -> None:
    obj = tiny()
    obj["spec"]["method"] = "qlora"
    obj["spec"]["quantization"] = {"bits": 8}
    job = FineTuneJob.from_k8s(obj)
    assert job.spec.quantization is not None and job.spec.quantization.bits == 8


def test_full_without_lora_is_valid() -> None:
    obj = tiny()
    obj["spec"]["method"] = "full"
    del obj["spec"]["lora"]
    assert FineTuneJob.from_k8s(obj).spec.method is Method.FULL


def test_quantities_accept_numbers() -> None:
    obj = tiny()
    obj["spec"]["resources"].update(cpu=2, memory="1.5Gi")
    res = FineTuneJob.from_k8s(obj).spec.resources
    assert (res.cpu, res.memory) == ("2", "1.5Gi")


def test_models_are_frozen() -> None:
    job = FineTuneJob.from_k8s(tiny())
    with pytest.raises(ValidationError):
        job.spec.training.max_steps = 99


def test_from_k8s_reads_status_and_mapping_views() -> None:
    obj = tiny()
    obj["metadata"].update(namespace="ml", generation=3, uid="u-1", managedFields=[{"manager": "x"}])
    obj["status"] = {
        "phase": "Training",
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "False", "reason": "Training"}],
        "progress": {"step": 3, "totalSteps": 5, "progressPercentage": 60, "loss": 2.5},
        "artifacts": [{"kind": "adapter", "uri": "s3://kubetune-dev/runs/tiny/abc/adapter/"}],
        "metrics": {"eval_loss": 1.25},
        "someFutureField": {"ignored": True},
    }
    job = FineTuneJob.from_k8s(MappingProxyType(obj))  # Kopf hands out read-only mappings
    assert job.metadata.namespace == "ml" and job.metadata.generation == 3
    assert job.status.phase is Phase.TRAINING
    assert job.status.progress is not None and job.status.progress.progress_percentage == 60
    ready = job.status.condition("Ready")
    assert ready is not None and ready.status == "False"
    assert job.status.metrics == {"eval_loss": 1.25}


def test_status_round_trips_in_camel_case() -> None:
    status = FineTuneJobStatus.model_validate(
        {"phase": "Succeeded", "runId": "0123456789ab", "lastCheckpoint": {"step": 5, "uri": "s3://b/c"}}
    )
    out = status.to_k8s()
    assert out == {
        "phase": "Succeeded",
        "runId": "0123456789ab",
        "lastCheckpoint": {"step": 5, "uri": "s3://b/c"},
        "conditions": [],
        "artifacts": [],
        "exportTargets": [],
        "metrics": {},
    }
    assert FineTuneJobStatus.model_validate(out) == status


# --- run id ---------------------------------------------------------------------------------------------


def test_spec_hash_is_twelve_hex_characters_and_stable() -> None:
    run_id = FineTuneJob.from_k8s(tiny()).spec_hash()
    assert re.fullmatch("[0-9a-f]{12}", run_id)
    assert FineTuneJob.from_k8s(tiny()).spec_hash() == run_id


def test_spec_hash_ignores_explicit_defaults_and_key_order() -> None:
    """The API server fills in defaults; the run id must not change because of it."""
    plain = tiny()
    defaulted = tiny()
    defaulted["spec"] = dict(reversed(list(defaulted["spec"].items())))
    defaulted["spec"]["backoffLimit"] = 2
    defaulted["spec"]["export"]["enabled"] = True
    defaulted["spec"]["lora"]["useDora"] = False
    defaulted["spec"]["output"]["credentialsSecretRef"]["accessKeyIdKey"] = "AWS_ACCESS_KEY_ID"
    assert FineTuneJob.from_k8s(plain).spec_hash() == FineTuneJob.from_k8s(defaulted).spec_hash()


@pytest.mark.parametrize(
    ("path", "value", "same_run"),
    [
        ("suspend", True, True),
        ("ttlSecondsAfterFinished", 60, True),
        ("activeDeadlineSeconds", 60, True),
        ("backoffLimit", 5, True),
        # A dry run and the real run are two runs: setting dryRun to false starts the real one.
        ("dryRun", True, False),
        ("training.learningRate", 1e-3, False),
        ("lora.r", 4, False),
        ("dataset.trainUri", "s3://kubetune-dev/datasets/other.jsonl", False),
        ("export.targets", [{"precision": "int8"}], False),
        ("export.gate", [{"metric": "parity", "min": 0.5}], False),
    ],
)
def test_spec_hash_changes_only_with_what_shapes_the_result(path: str, value: Any, same_run: bool) -> None:
    obj = tiny()
    node = obj["spec"]
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    before = FineTuneJob.from_k8s(tiny()).spec_hash()
    assert (FineTuneJob.from_k8s(obj).spec_hash() == before) is same_run


# --- the models themselves ------------------------------------------------------------------------------


def _api_models() -> list[type[BaseModel]]:
    out = [m for m in vars(v1alpha1).values() if isinstance(m, type) and issubclass(m, v1alpha1.ApiModel)]
    return [m for m in out if m not in (v1alpha1.ApiModel, v1alpha1.LenientModel, v1alpha1.ObjectMeta)]


# The object's own fields (apiVersion, kind, metadata, ...) are described by the CRD generator.
@pytest.mark.parametrize(
    "model", [m for m in _api_models() if m is not FineTuneJob], ids=lambda m: m.__name__
)
def test_every_field_is_described(model: type[BaseModel]) -> None:
    missing = [name for name, f in model.model_fields.items() if not f.description]
    assert not missing, f"{model.__name__}: fields without a description: {missing}"


def test_model_rules_have_python_twins_except_transition_rules() -> None:
    for model in _api_models():
        for rule in model.cel_rules:  # type: ignore[attr-defined]
            assert isinstance(rule, Cel)
            assert (rule.check is None) == ("oldSelf" in rule.rule), (model.__name__, rule.rule)


def test_explicit_null_means_unset() -> None:
    obj = tiny()
    obj["spec"]["dataset"]["evalUri"] = None
    obj["spec"]["training"]["epochs"] = None
    job = FineTuneJob.from_k8s(obj)
    assert job.spec.dataset.eval_uri is None
    assert job.spec_hash() == FineTuneJob.from_k8s(tiny()).spec_hash()
