from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_trainer.config import DEFAULT_INT4_MIXED_PRECISION, parse_config, template_fields
from kubetune_trainer.errors import ExitCode, TrainerError

REPO = Path(__file__).resolve().parents[2]


def minimal() -> dict:
    return {
        "name": "tone",
        "runId": "abc",
        "baseModel": {"uri": "s3://models/SmolLM2-135M-Instruct/"},
        "dataset": {
            "trainUri": "s3://data/tone/train.jsonl",
            "textTemplate": "Phrase: {phrase}\nTone: {tone}",
        },
        "output": {"uri": "s3://runs/tone/abc"},
    }


def invalid(data: dict) -> str:
    with pytest.raises(TrainerError) as info:
        parse_config(data)
    assert info.value.exit_code == ExitCode.INVALID_CONFIG
    return info.value.message


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_config(minimal())
    assert cfg.method == "lora"
    assert cfg.lora.r == 16 and cfg.lora.alpha == 32 and cfg.lora.target_modules is None
    assert cfg.training.precision == "fp32" and cfg.training.max_steps is None
    assert cfg.export.precision == "int4" and cfg.export.execution_provider == "cpu"
    assert cfg.export.int4.algo == "k_quant"
    assert cfg.export.int4.mixed_precision == DEFAULT_INT4_MIXED_PRECISION
    assert cfg.dataset.answer_field == "tone"


def test_camel_case_and_snake_case_both_parse_and_dump_camel() -> None:
    data = minimal()
    data["training"] = {"maxSteps": 5, "learning_rate": 1e-3}
    cfg = parse_config(json.dumps(data))
    assert cfg.training.max_steps == 5 and cfg.training.learning_rate == 1e-3
    dumped = cfg.model_dump(by_alias=True)
    assert "runId" in dumped and "maxSteps" in dumped["training"]


def test_unknown_methods_are_rejected_naming_the_choices() -> None:
    message = invalid({**minimal(), "method": "prefix"})
    assert "method" in message and "'lora', 'qlora' or 'full'" in message


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"export": {"precision": "fp16"}}, "fp16 needs executionProvider cuda"),
        ({"training": {"warmupSteps": 2, "warmupRatio": 0.1}}, "warmupSteps or warmupRatio"),
        ({"training": {"precision": "fp8"}}, "training.precision"),
        ({"lora": {"targetModules": []}}, "lora.targetModules"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_invalid_values_name_the_field(patch: dict, expected: str) -> None:
    assert expected in invalid({**minimal(), **patch})


def test_template_without_placeholders_is_rejected() -> None:
    data = minimal()
    data["dataset"] = {**data["dataset"], "textTemplate": "no fields here"}
    assert "placeholders" in invalid(data)


def test_response_field_must_be_in_template() -> None:
    data = minimal()
    data["dataset"] = {**data["dataset"], "responseField": "label"}
    assert "responseField" in invalid(data)


def test_missing_required_fields_are_all_listed() -> None:
    message = invalid({"name": "x"})
    for field in ("runId", "baseModel", "dataset", "output"):
        assert field in message


def test_spec_hash_is_stable_and_sensitive() -> None:
    a, b = parse_config(minimal()), parse_config(minimal())
    assert a.spec_hash() == b.spec_hash()
    changed = parse_config({**minimal(), "runId": "other"})
    assert changed.spec_hash() != a.spec_hash()


def test_template_fields() -> None:
    assert template_fields("Q: {question}\nA: {answer}") == ["question", "answer"]
    assert template_fields("{{literal}} {x}") == ["x"]


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "trainer").glob("*.json")), ids=lambda p: p.name)
def test_shipped_example_configs_are_valid(path: Path) -> None:
    parse_config(path.read_bytes())
