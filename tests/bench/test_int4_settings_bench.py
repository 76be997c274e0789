"""The int4 settings benchmark still runs end to end (a smoke run on the tiny model: both example tasks
trained, merged, answered by PyTorch, two settings built as merged model and as base+adapter pair and
measured), and its JSON holds what the tables say: differences from PyTorch computed from the measured
exact matches, and the settings within tolerance read off them. The figures go to docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from kubetune_api import ExportTarget

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "int4_settings.py"
PAIR_AND_MERGED = ("exactMatch", "parityTokenAgreement", "decodeTokensPerSecond")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("int4_settings_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def run_smoke(tmp_path: Path) -> tuple[dict[str, Any], str]:
    out = tmp_path / "int4.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), "--workdir", str(tmp_path / "work")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def check_row(row: dict[str, Any], torch_exact: float) -> None:
    metrics = row["metrics"]
    for name in PAIR_AND_MERGED:
        assert name in metrics and f"adapter{name[0].upper()}{name[1:]}" in metrics
    for share in ("exactMatch", "adapterExactMatch", "parityTokenAgreement", "adapterParityTokenAgreement"):
        assert 0 <= metrics[share] <= 1
    assert row["buildSeconds"] > 0 and row["adapterBuildSeconds"] > 0
    assert row["exactMatchDeltaPoints"] == pytest.approx(
        100 * (metrics["exactMatch"] - torch_exact), abs=0.01
    )
    assert row["adapterExactMatchDeltaPoints"] == pytest.approx(
        100 * (metrics["adapterExactMatch"] - torch_exact), abs=0.01
    )


def test_int4_settings_smoke_run_reports_differences_of_its_measured_figures(tmp_path: Path) -> None:
    doc, stdout = run_smoke(tmp_path)

    assert doc["run"] == {
        "model": "tiny-random-llama",
        "tasks": ["tone", "intent"],
        "settings": ["default", "rtn-bs32"],
        "tolerancePoints": 2.0,
    }
    machine = doc["machine"]
    assert machine["cpus"] >= 1 and machine["threads"] >= 1
    assert len(machine["loadAverage"]) == len(machine["loadAverageAtEnd"]) == 3
    assert {"torch", "transformers", "onnxruntime-genai"} <= set(machine["libraries"])

    assert [task["task"] for task in doc["tasks"]] == ["tone", "intent"]
    for task in doc["tasks"]:
        assert (REPO / task["example"]).is_file()
        assert task["heldOutRows"] == 2 and task["maxNewTokens"] == 4
        torch_exact = task["pytorch"]["exactMatch"]
        assert 0 <= torch_exact <= 1 and task["pytorch"]["seconds"] > 0
        rows = {row["setting"]: row for row in task["rows"]}
        assert list(rows) == ["default", "rtn-bs32"]
        for row in rows.values():
            check_row(row, torch_exact)
            assert row["sameAs"] is None
        assert rows["default"]["int4"] == ExportTarget().int4.model_dump(mode="json", by_alias=True)
        assert rows["rtn-bs32"]["int4"]["algorithm"] == "rtn" and rows["rtn-bs32"]["int4"]["blockSize"] == 32

    def kept(delta: str) -> list[str]:
        names = ["default", "rtn-bs32"]
        deltas = [{r["setting"]: r[delta] for r in task["rows"]} for task in doc["tasks"]]
        return [n for n in names if all(d[n] >= -2.0 for d in deltas)]

    within = doc["withinTolerance"]
    assert within["merged"] == kept("exactMatchDeltaPoints")
    assert within["pair"] == kept("adapterExactMatchDeltaPoints")
    assert within["both"] == [n for n in within["merged"] if n in within["pair"]]
    assert "pair exact" in stdout and "within 2 points of PyTorch on every task (tone, intent)" in stdout


def test_settings_table_names_the_asked_for_int4_settings() -> None:
    bench = load_script()
    expected = {
        "rtn-bs32": ("rtn", 32, "int4", "int4"),
        "rtn-bs16": ("rtn", 16, "int4", "int4"),
        "kquant-bs32": ("k_quant", 32, "int4", "int4"),
        "kquant-bs32-last8": ("k_quant", 32, "int8", "int4"),
        "kquant-bs32-last8-mixed8": ("k_quant", 32, "int8", "int8"),
        "kquant-bs16-last8": ("k_quant", 16, "int8", "int4"),
        "kquant-bs16-last8-mixed8": ("k_quant", 16, "int8", "int8"),
        "rtn-bs16-last8-mixed8": ("rtn", 16, "int8", "int8"),
    }
    for name, fields in expected.items():
        target = bench.SETTINGS_BY_NAME[name].target()
        assert target.precision == "int4"
        assert (target.int4.algorithm, target.int4.block_size, target.int4.last_matmul) == fields[:3]
        assert target.int4.mixed_layers == fields[3]
    assert bench.SETTINGS_BY_NAME["default"].target() == ExportTarget()
    assert bench.SETTINGS_BY_NAME["int8"].target().name == "int8-cpu"


def fake_figures(exact: float, adapter_exact: float) -> dict[str, Any]:
    metrics = {"exactMatch": exact, "adapterExactMatch": adapter_exact}
    return {"metrics": metrics, "buildSeconds": 1.0, "adapterBuildSeconds": 2.0}


def test_a_setting_equal_to_an_earlier_target_is_reported_from_its_figures_not_built_again() -> None:
    bench = load_script()
    defaults = ExportTarget().int4
    twin = bench.Setting("twin-of-default", "int4", defaults.model_dump(mode="json", by_alias=True))
    settings = (bench.SETTINGS_BY_NAME["default"], bench.SETTINGS_BY_NAME["rtn-bs32"], twin)
    figures = {"default": fake_figures(0.85, 0.9), "rtn-bs32": fake_figures(0.95, 0.975)}
    built: list[str] = []

    def measure(setting: Any, target: ExportTarget) -> dict[str, Any]:
        built.append(setting.name)
        return figures[setting.name]

    rows = bench.setting_rows(settings, measure, torch_exact=0.9)

    assert built == ["default", "rtn-bs32"]
    assert [(r["setting"], r["sameAs"]) for r in rows] == [
        ("default", None),
        ("rtn-bs32", None),
        ("twin-of-default", "default"),
    ]
    assert [r["exactMatchDeltaPoints"] for r in rows] == [-5.0, 5.0, -5.0]
    assert [r["adapterExactMatchDeltaPoints"] for r in rows] == [0.0, 7.5, 0.0]


def test_within_tolerance_needs_every_task_and_counts_a_gain_as_within() -> None:
    bench = load_script()

    def task(**deltas: tuple[float, float]) -> dict[str, Any]:
        rows = [
            {"setting": name, "exactMatchDeltaPoints": merged, "adapterExactMatchDeltaPoints": pair}
            for name, (merged, pair) in deltas.items()
        ]
        return {"rows": rows}

    tasks = [
        task(a=(0.0, -2.0), b=(-2.5, 0.0), c=(5.0, 2.5)),
        task(a=(-2.0, 0.0), b=(0.0, 0.0), c=(0.0, -2.78)),
    ]

    assert bench.within_tolerance(tasks, 2.0) == {"merged": ["a", "c"], "pair": ["a", "b"], "both": ["a"]}


def test_trainer_inputs_are_the_examples_with_local_paths(tmp_path: Path) -> None:
    load_script()  # puts bench/ on sys.path
    import bench_common

    for task in bench_common.TASKS.values():
        job = bench_common.trainer_input(task, tmp_path / "base", tmp_path / task.name, smoke=False)
        example = yaml.safe_load(task.example.read_text())["spec"]
        assert job.spec.base_model.uri == str(tmp_path / "base")
        assert job.spec.dataset.train_uri == str(task.data_dir / "train.jsonl")
        assert job.spec.dataset.eval_uri == str(task.data_dir / "eval.jsonl")
        assert job.spec.dataset.text_template == example["dataset"]["textTemplate"]
        assert job.spec.training.to_k8s() == {**job.spec.training.to_k8s(), **example["training"]}
        assert job.spec.lora is not None and job.spec.lora.to_k8s()["r"] == example["lora"]["r"]
        assert job.run.output_root == str(tmp_path / task.name / "run")
        assert job.run.shared_bases_root == str(tmp_path / task.name / "bases")
