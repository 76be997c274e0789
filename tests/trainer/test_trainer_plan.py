"""The dry run's plan (kubetune_trainer.plan) on the tiny Llama: what a clean spec reports, and each
problem a bad spec or bad data gives, through the trainer's own readers and encoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import PlanSeverity, PlanStatus
from kubetune_trainer.cli import TERMINATION_LOG_ENV
from kubetune_trainer.plan import main, plan, render_plan
from kubetune_trainer.result import RESULT_LIMIT

TONE = "Phrase: {phrase}\nTone: {tone}"


def write_rows(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run_plan(make_input: Any, model: Path, tmp_path: Path, **overrides: Any) -> PlanStatus:
    job = make_input(str(model), str(tmp_path / "out"), **overrides)
    return plan(job, tmp_path / "work")


def reasons(found: PlanStatus) -> dict[str, PlanSeverity]:
    return {p.reason: p.severity for p in found.problems}


def test_clean_spec_reports_the_run(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    found = run_plan(make_input, tiny_model_dir, tmp_path)
    assert found.problems == [] and found.format == "text" and found.base_format == "hf"
    assert found.examples and found.examples[0].startswith("Phrase: ") and "\nTone: " in found.examples[0]
    assert (
        found.tokens is not None
        and 0 < found.tokens.min <= found.tokens.p50 <= found.tokens.p95 <= found.tokens.max
    )
    assert found.labels is not None and found.labels.scope == "all" and found.labels.labeled_share == 1.0
    assert set(found.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert {"gate_proj", "up_proj", "down_proj"} <= set(found.linear_modules)
    assert found.total_parameters and 0 < (found.trainable_parameters or 0) < found.total_parameters
    own = found.memory[0]
    assert own.spec and (own.method, own.batch_size, own.precision) == ("lora", 8, "fp32")
    assert (
        own.total_mib
        == own.weights_mib + own.trainable_state_mib + own.activations_mib + own.logits_mib + own.overhead_mib
    )
    assert {(m.method, m.batch_size) for m in found.memory[1:]} == {
        (method, batch) for method in ("lora", "qlora", "full") for batch in (1, 8)
    }
    by = {(m.method, m.batch_size): m for m in found.memory[1:]}
    assert by[("qlora", 8)].weights_mib <= by[("lora", 8)].weights_mib
    assert by[("full", 8)].trainable_state_mib > by[("lora", 8)].trainable_state_mib
    # maxSteps 30 sets the length; an epoch of the tone rows at batch 8.
    assert found.total_steps == 30 and found.steps_per_epoch == -(-(found.rows or 0) // 8)
    assert len(render_plan(found).encode()) <= RESULT_LIMIT


def test_missing_template_field(
    make_input: Any, tiny_model_dir: Path, tmp_path: Path, tone_dir: Path
) -> None:
    dataset = {"trainUri": str(tone_dir / "train.jsonl"), "textTemplate": "{phrase} => {label}"}
    found = run_plan(make_input, tiny_model_dir, tmp_path, dataset=dataset)
    assert reasons(found) == {"MissingField": PlanSeverity.ERROR}
    assert "'label'" in found.problems[0].message and "row 1 has: phrase, tone" in found.problems[0].message


def test_every_row_truncated(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"text": "word " * 60} for _ in range(6)]
    dataset = {"trainUri": write_rows(tmp_path / "long.jsonl", rows), "format": "text"}
    found = run_plan(make_input, tiny_model_dir, tmp_path, dataset=dataset, training={"maxSeqLength": 16})
    assert reasons(found) == {"AllRowsTruncated": PlanSeverity.ERROR}
    assert found.tokens is not None and found.tokens.truncated_rows == 6


def test_some_rows_truncated_is_a_warning(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"text": "word " * 60}] + [{"text": "hi"} for _ in range(5)]
    dataset = {"trainUri": write_rows(tmp_path / "mixed.jsonl", rows), "format": "text"}
    found = run_plan(make_input, tiny_model_dir, tmp_path, dataset=dataset, training={"maxSeqLength": 16})
    assert reasons(found) == {"SomeRowsTruncated": PlanSeverity.WARNING}


def test_chat_rows_without_assistant_turns(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "anyone?"}]},
    ]
    dataset = {"trainUri": write_rows(tmp_path / "chat.jsonl", rows), "format": "chat"}
    found = run_plan(make_input, tiny_model_dir, tmp_path, dataset=dataset)
    assert reasons(found) == {"NoAssistantTurns": PlanSeverity.ERROR}
    assert (
        found.labels is not None and found.labels.scope == "assistant" and 0 < found.labels.labeled_share < 1
    )


def test_completions_cut_off_leave_no_labels(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"prompt": "a long prompt " * 20, "completion": " yes"} for _ in range(4)]
    dataset = {"trainUri": write_rows(tmp_path / "pc.jsonl", rows), "format": "promptCompletion"}
    found = run_plan(make_input, tiny_model_dir, tmp_path, dataset=dataset, training={"maxSeqLength": 16})
    assert reasons(found) == {"AllRowsTruncated": PlanSeverity.ERROR, "NoLabels": PlanSeverity.ERROR}
    assert found.labels is not None and found.labels.rows_without_labels == 4


def test_some_rows_without_labels_is_a_warning(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"prompt": "a long prompt " * 20, "completion": " yes"}] + [
        {"prompt": "short", "completion": " yes"} for _ in range(3)
    ]
    dataset = {"trainUri": write_rows(tmp_path / "pc.jsonl", rows), "format": "promptCompletion"}
    found = run_plan(make_input, tiny_model_dir, tmp_path, dataset=dataset, training={"maxSeqLength": 16})
    assert reasons(found) == {
        "SomeRowsTruncated": PlanSeverity.WARNING,
        "RowsWithoutLabels": PlanSeverity.WARNING,
    }
    assert (
        found.labels is not None
        and found.labels.scope == "completion"
        and found.labels.rows_without_labels == 1
    )


def test_unknown_lora_targets(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    found = run_plan(make_input, tiny_model_dir, tmp_path, lora={"targetModules": ["q_proj", "qkv"]})
    assert reasons(found) == {"UnknownTargetModules": PlanSeverity.ERROR}
    assert "['qkv']" in found.problems[0].message


def test_full_method_trains_every_parameter(make_input: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    found = run_plan(make_input, tiny_model_dir, tmp_path, method="full", lora=None)
    assert found.trainable_parameters == found.total_parameters and found.target_modules == []
    assert found.memory[0].method == "full"


def test_entrypoint_leaves_the_plan_as_termination_message(
    make_config: Any, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "input.json"
    config.write_text(json.dumps(make_config(str(tiny_model_dir), str(tmp_path / "out"))))
    log = tmp_path / "termination-log"
    log.write_text("")
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    assert main(["--config", str(config), "--workdir", str(tmp_path / "work")]) == 0
    document = json.loads(log.read_text())
    assert PlanStatus.model_validate(document["plan"]).rows
    assert not (tmp_path / "out").exists()  # a dry run writes nothing to the run's output
