"""policies/results.py: status.metrics and status.artifacts from the succeeded Jobs' termination
messages (the operator is their only writer)."""

from __future__ import annotations

import json

import pytest
from child_cases import (
    ADAPTER,
    EXPORT_DISABLED,
    NOW,
    ONNX,
    SHA,
    T_COMPLETE,
    TRAINER_METRICS,
    Child,
    ago,
    cond,
    job,
    observed,
    pod,
    result,
)
from operator_cases import tiny

from kubetune_api import Phase
from kubetune_operator.policies import results
from kubetune_operator.policies.decide import decide


def exporter_with(message: str) -> Child:
    return (
        job("exporter", succeeded=1, completionTime=ago(1), conditions=(cond("Complete"),)),
        [pod("exporter", "tiny-export-a", 0, "Completed", message, ago(1))],
    )


def test_artifacts_and_metrics_are_parsed_from_the_termination_message() -> None:
    ftj = tiny()
    message = json.dumps(
        {
            "metrics": {"evalLoss": 0.5, "steps": 5, "note": "text", "flag": True},
            "artifacts": [
                {"kind": "onnx", "uri": "s3://kubetune-dev/runs/tiny/onnx/", "sizeBytes": 1, "sha256": SHA},
                {"kind": "onnx", "uri": "s3://x/bad-sha", "sha256": "not-hex"},
                {"kind": "unknown-kind", "uri": "s3://x/y"},
            ],
        }
    )
    decision = decide(ftj, observed(ftj, T_COMPLETE, exporter_with(message)), NOW)
    assert decision.metrics == {**TRAINER_METRICS, "evalLoss": 0.5, "steps": 5.0}
    onnx = decision.artifacts[-1]
    assert len(decision.artifacts) == 2  # the adapter, and the one valid onnx entry
    assert (onnx.kind.value, onnx.uri, onnx.size_bytes, onnx.sha256) == (
        "onnx",
        "s3://kubetune-dev/runs/tiny/onnx/",
        1,
        SHA,
    )


@pytest.mark.parametrize(
    "message",
    [
        "",
        "not json",
        "[1, 2]",
        '{"metrics": {"evalLoss": 1.0',  # cut at the kubelet's 4096-byte limit
        pytest.param(
            '{"metrics": "none", "artifacts": 5}',
            id="wrong-types",
        ),
    ],
)
def test_an_unreadable_result_gives_no_metrics(message: str) -> None:
    ftj = tiny(EXPORT_DISABLED)
    trainer: Child = (
        job("trainer", succeeded=1, completionTime=ago(5), conditions=(cond("Complete"),)),
        [pod("trainer", "tiny-train-a", 0, "Completed", message, ago(5))],
    )
    decision = decide(ftj, observed(ftj, trainer, None), NOW)
    assert decision.phase == Phase.SUCCEEDED
    assert (decision.metrics, decision.artifacts) == ({}, [])


def test_an_artifact_listed_by_both_jobs_appears_once() -> None:
    ftj = tiny()
    decision = decide(ftj, observed(ftj, T_COMPLETE, exporter_with(result({}, ADAPTER))), NOW)
    assert decision.phase == Phase.SUCCEEDED
    assert [a.kind.value for a in decision.artifacts].count("adapter") == 1


FAILED_EXPORT: Child = (
    job("exporter", failed=1, conditions=(cond("Failed", "BackoffLimitExceeded", "limit"),)),
    [pod("exporter", "tiny-export-a", 1, "Error", result({"parityMatchRate": 0.1}, ONNX), ago(1))],
)
RUNNING_EXPORT: Child = (job("exporter", active=1), [])


@pytest.mark.parametrize(
    ("exporter", "metrics", "kinds"),
    [
        (None, TRAINER_METRICS, ["adapter"]),
        (RUNNING_EXPORT, TRAINER_METRICS, ["adapter"]),
        (FAILED_EXPORT, TRAINER_METRICS, ["adapter"]),  # only succeeded Jobs report results
        (
            exporter_with(result({"evalLoss": 9.0}, ONNX)),
            {**TRAINER_METRICS, "evalLoss": 9.0},
            ["adapter", "onnx"],
        ),
    ],
    ids=["trained", "exporting", "export-failed", "exported-later-stage-wins"],
)
def test_collect(exporter: Child | None, metrics: dict[str, float], kinds: list[str]) -> None:
    ftj = tiny()
    seen = observed(ftj, T_COMPLETE, exporter)
    got_metrics, artifacts = results.collect(seen.trainer, seen.exporter)
    assert got_metrics == metrics
    assert [a.kind.value for a in artifacts] == kinds


RESULT_URI = "s3://kubetune-dev/runs/tiny/run-1/training_result.json"


def test_a_truncated_result_points_the_status_at_the_full_record() -> None:
    """Both sides of the contract: a trainer result of more than 4 KiB, rendered by the trainer's own
    code, read by this policy. What was left out is named, and the full record becomes an artifact."""
    from kubetune_trainer.result import RESULT_LIMIT, render

    metrics = {f"metric{i:03d}": float(i) for i in range(300)} | {"evalLoss": 0.5}
    message = render(metrics, [ADAPTER], RESULT_URI)
    assert len(json.dumps({"metrics": metrics, "artifacts": [ADAPTER]})) > RESULT_LIMIT >= len(message)
    ftj = tiny(EXPORT_DISABLED)
    trainer: Child = (
        job("trainer", succeeded=1, completionTime=ago(5), conditions=(cond("Complete"),)),
        [pod("trainer", "tiny-train-a", 0, "Completed", message, ago(5))],
    )
    seen = observed(ftj, trainer, None)
    got_metrics, artifacts = results.collect(seen.trainer, seen.exporter)
    assert [(a.kind.value, a.uri) for a in artifacts] == [
        ("adapter", ADAPTER["uri"]),
        ("metrics", RESULT_URI),
    ]
    assert got_metrics["evalLoss"] == 0.5 and 0 < len(got_metrics) < len(metrics)
    (note,) = results.truncation_notes(seen.trainer, seen.exporter)
    assert "metrics.* (" in note and note.endswith(f"the full result is at {RESULT_URI}")
    decision = decide(ftj, seen, NOW)
    assert ("metrics", RESULT_URI) in [(a.kind.value, a.uri) for a in decision.artifacts]
    assert decision.message.endswith(f"; {note}")  # in status.message, where the user looks


def test_summarised_artifacts_are_kept_and_a_listed_record_is_not_repeated() -> None:
    manifest = "s3://kubetune-dev/runs/tiny/run-1/manifest.json"
    message = json.dumps(
        {
            "metrics": {},
            "artifacts": [{"kind": "onnx", "uri": ONNX["uri"]}, {"kind": "manifest", "uri": manifest}],
            "truncated": ["metrics.parity", "artifacts.sizeBytes", "artifacts.sha256"],
            "resultUri": manifest,
        }
    )
    ftj = tiny()
    seen = observed(ftj, T_COMPLETE, exporter_with(message))
    _, artifacts = results.collect(seen.trainer, seen.exporter)
    assert [(a.kind.value, a.uri, a.sha256) for a in artifacts][-2:] == [
        ("onnx", ONNX["uri"], None),
        ("manifest", manifest, None),
    ]
    assert results.truncation_notes(seen.trainer) == []  # the trainer's own result was whole


def test_export_targets_come_from_the_export_document() -> None:
    targets = [
        {"name": "int4-cpu", "gate": "Passed", "metrics": {"exactMatch": 0.95, "parity": 1.0}},
        {"name": "int8-cpu", "gate": "None", "metrics": {}},
        {"name": "bad", "gate": "Maybe"},  # not a verdict this version knows: left out, still in S3
    ]
    message = json.dumps({"metrics": {}, "artifacts": [ONNX], "targets": targets})
    parsed = results.export_targets(observed(tiny(), T_COMPLETE, exporter_with(message)).exporter)
    assert [(t.name, t.gate.value, t.metrics) for t in parsed] == [
        ("int4-cpu", "Passed", {"exactMatch": 0.95, "parity": 1.0}),
        ("int8-cpu", "None", {}),
    ]
