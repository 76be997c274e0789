"""The decode benchmark still runs end to end (a smoke run on the tiny model: train, merge, build fp32-cpu,
time both sides, score), and its JSON holds what the table says: medians of the per-prompt figures and
ratios and accuracy differences computed from them. The figures themselves go to docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "decode.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("decode_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def run_smoke(tmp_path: Path) -> tuple[dict[str, Any], str]:
    out = tmp_path / "decode.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), "--workdir", str(tmp_path / "work")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def test_decode_benchmark_smoke_run_reports_ratios_of_its_measured_figures(tmp_path: Path) -> None:
    doc, stdout = run_smoke(tmp_path)

    expected_settings = {
        "model": "tiny-random-llama",
        "targets": ["fp32-cpu"],
        "prompts": 2,
        "newTokens": 4,
        "accuracyRows": 4,
        "accuracyNewTokens": 4,
    }
    assert {key: doc["settings"][key] for key in expected_settings} == expected_settings
    machine = doc["machine"]
    assert machine["cpus"] >= 1 and machine["threads"] >= 1
    assert {"torch", "transformers", "onnxruntime-genai"} <= set(machine["libraries"])

    rows = {row["name"]: row for row in doc["rows"]}
    assert list(rows) == ["transformers-fp32-cpu", "fp32-cpu"]
    baseline, target = rows["transformers-fp32-cpu"], rows["fp32-cpu"]
    assert (baseline["engine"], target["engine"]) == ("transformers", "onnxruntime-genai")
    assert baseline["baseline"] == target["baseline"] == "transformers-fp32-cpu"
    assert target["buildSeconds"] > 0 and target["int4"] is None

    for row in rows.values():
        for figure in ("prefillTokensPerSecond", "decodeTokensPerSecond"):
            per_prompt = row[f"{figure}ByPrompt"]
            assert len(per_prompt) == 2 and all(x > 0 for x in per_prompt)
            assert row[figure] == pytest.approx(statistics.median(per_prompt), abs=0.02)
        assert 0 <= row["accuracy"] <= 1
    assert baseline["decodeRatio"] == 1.0 and baseline["accuracyDeltaPoints"] == 0.0
    expected_ratio = target["decodeTokensPerSecond"] / baseline["decodeTokensPerSecond"]
    assert target["decodeRatio"] == pytest.approx(expected_ratio, rel=1e-3)
    expected_delta = 100 * (target["accuracy"] - baseline["accuracy"])
    assert target["accuracyDeltaPoints"] == pytest.approx(expected_delta, abs=0.01)

    assert "decode ratio" in stdout
    assert f"{target['decodeRatio']:.2f}x" in stdout


def test_int4_overrides_are_api_settings_over_the_api_defaults() -> None:
    decode = load_script()
    default = decode.export_target("int4-cpu", {})
    override = dict(map(decode.key_value, ["blockSize=64", "algorithm=rtn"]))
    target = decode.export_target("int4-cpu", override)

    assert (target.name, target.int4.block_size, target.int4.algorithm) == ("int4-cpu", 64, "rtn")
    assert target.int4.last_matmul == default.int4.last_matmul  # the rest stays at the API default
    assert decode.export_target("int8-cpu", override).name == "int8-cpu"
