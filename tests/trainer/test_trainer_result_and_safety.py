"""The result document always fits the termination message and says what it left out (read back by the
operator's results policy), and every model load is explicit about safetensors and remote code."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from kubetune_trainer.result import RESULT_LIMIT, render

TRAINER = Path(__file__).resolve().parents[2] / "trainer" / "kubetune_trainer"
RESULT_URI = "s3://kubetune-dev/runs/tone/run-1/training_result.json"
SHA = "ab" * 32


def _artifacts(n: int, uri_length: int = 40) -> list[dict[str, object]]:
    return [
        {"kind": "onnx", "uri": f"s3://b/{'x' * uri_length}/{i}/", "sizeBytes": 10 + i, "sha256": SHA}
        for i in range(n)
    ]


def test_a_small_result_is_whole_and_says_nothing_was_left_out() -> None:
    document = json.loads(render({"evalLoss": 0.5, "note": "text"}, _artifacts(2), RESULT_URI))
    assert document == {"metrics": {"evalLoss": 0.5}, "artifacts": _artifacts(2)}


def test_metrics_that_do_not_fit_are_dropped_least_important_first_and_named() -> None:
    # Long values: naming a dropped metric costs less than keeping it.
    metrics = {f"taskMetric{i:03d}": 1 / 3 + i for i in range(40)} | {"evalLoss": 0.25, "steps": 60}
    artifacts = _artifacts(11, uri_length=150)
    assert len(json.dumps({"metrics": metrics, "artifacts": artifacts})) > RESULT_LIMIT
    text = render(metrics, artifacts, RESULT_URI)
    document = json.loads(text)
    assert len(text.encode()) <= RESULT_LIMIT
    assert document["artifacts"] == artifacts  # artifacts whole
    assert document["resultUri"] == RESULT_URI
    kept, truncated = document["metrics"], document["truncated"]
    assert {"evalLoss", "steps"} <= set(kept) and "taskMetric000" in kept and "taskMetric039" not in kept
    # Everything is kept, or named or counted as dropped: nothing disappears silently.
    if truncated[0].startswith("metrics.* ("):  # counting kept more than naming would have
        assert truncated == [f"metrics.* ({len(metrics) - len(kept)} of {len(metrics)})"]
    else:
        dropped = {d.removeprefix("metrics.") for d in truncated}
        assert set(kept) | dropped == set(metrics) and not set(kept) & dropped


def test_when_even_the_names_do_not_fit_the_count_is_given() -> None:
    metrics = {f"zzMetric{i:03d}": float(i) for i in range(300)} | {"evalLoss": 0.25, "steps": 60}
    text = render(metrics, _artifacts(3), RESULT_URI)
    document = json.loads(text)
    assert len(text.encode()) <= RESULT_LIMIT
    assert document["artifacts"] == _artifacts(3) and document["resultUri"] == RESULT_URI
    assert {"evalLoss", "steps"} <= set(document["metrics"])
    dropped = len(metrics) - len(document["metrics"])
    assert document["truncated"] == [f"metrics.* ({dropped} of {len(metrics)})"]


def test_artifacts_that_do_not_fit_are_summarised_never_dropped() -> None:
    artifacts = _artifacts(14, uri_length=200)
    text = render({"evalLoss": 0.5}, artifacts, RESULT_URI)
    document = json.loads(text)
    assert len(text.encode()) <= RESULT_LIMIT
    assert [(a["kind"], a["uri"]) for a in document["artifacts"]] == [
        (a["kind"], a["uri"]) for a in artifacts
    ]
    assert "artifacts.sizeBytes" in document["truncated"] and document["metrics"] == {}
    assert document["truncated"][0] in ("metrics.evalLoss", "metrics.* (1 of 1)")


def _calls(name: str) -> list[tuple[str, int, ast.Call]]:
    found = []
    for path in sorted(TRAINER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                found.append((path.name, node.lineno, node))
    return found


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_every_from_pretrained_refuses_remote_code() -> None:
    calls = _calls("from_pretrained")
    assert len(calls) >= 6  # tokenizers and models of GGUF, folder and adapter loads
    missing = [(f, line) for f, line, call in calls if _keyword(call, "trust_remote_code") is not False]
    assert missing == []


def test_every_model_load_and_save_is_safetensors() -> None:
    model_loads = [c for c in _calls("from_pretrained") if "Model" in ast.unparse(c[2].func)]
    # GGUF files are tensors only; peft has no switch, so merge_adapter refuses a folder without
    # adapter_model.safetensors (onnx_build.ADAPTER_WEIGHTS) before it loads.
    unsafe = [
        (f, line)
        for f, line, call in model_loads
        if _keyword(call, "use_safetensors") is not True
        and not any(k.arg == "gguf_file" for k in call.keywords)
        and "PeftModel" not in ast.unparse(call.func)
    ]
    assert unsafe == []
    saves = [c for c in _calls("save_pretrained") if "tokenizer" not in ast.unparse(c[2].func)]
    assert (
        saves
        and [(f, line) for f, line, call in saves if _keyword(call, "safe_serialization") is not True] == []
    )


def test_the_onnx_builder_never_runs_remote_code(tmp_path: Path) -> None:
    from kubetune_api.v1alpha1 import ExportTarget
    from kubetune_trainer.onnx_build import builder_arguments

    args = builder_arguments(ExportTarget(), tmp_path, tmp_path / "o", tmp_path / "c", ("adapter_path=/a",))
    extra = args[args.index("--extra_options") + 1 :]
    assert "hf_remote=false" in extra and "hf_token=false" in extra
