"""The throughput and speed-up benchmarks still run against the trainer's current API (smoke runs on the
tiny model; the figures themselves are recorded in docs/benchmarks.md, not asserted). Every case runs once and
each workload once, with Kubetune in both (its ratio to the best baseline is the script's point): the
cases and the two precisions are split over the two workloads, which halves the processes a full matrix
would start."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ALL_CASES = {"hf-dynamic", "trl", "olive", "kubetune-plain", "kubetune"}
SPLIT = {"tone": ("olive", "kubetune"), "chat": ("hf-dynamic", "trl", "kubetune-plain", "kubetune")}
# The chat run is the GPU comparison's (bf16 mixed precision, against HF and TRL), smoke-run on the CPU;
# the tone run is the CPU's fp32 comparison.
PRECISION = {"tone": "fp32", "chat": "bf16"}


def run_bench(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack")}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def import_bench(name: str) -> Any:
    environ = dict(os.environ)  # the scripts set their own defaults (offline hub and so on) on import
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "bench"))
        os.environ.clear()
        os.environ.update(environ)


def test_rounds_report_each_case_by_its_median_round_and_the_ratio_within_each_round() -> None:
    throughput = import_bench("throughput")

    def case(tokens: float) -> dict[str, float]:
        return {"realTokensPerSecond": tokens}

    rounds = [
        {"olive": case(200), "hf-dynamic": case(180), "kubetune": case(260)},
        {"olive": case(150), "hf-dynamic": case(160), "kubetune": case(240)},  # a slow stretch for Olive
        {"olive": case(210), "hf-dynamic": case(170), "kubetune": {"error": "failed"}},
    ]
    assert throughput.median_round("olive", rounds) == {**case(200), "rounds": [200, 150, 210]}
    assert throughput.median_round("kubetune", rounds)["realTokensPerSecond"] == 240  # of the rounds that ran
    assert [throughput.kubetune_ratio(r) for r in rounds] == [1.3, 1.5, None]


def test_the_split_covers_every_case_and_workload() -> None:
    assert set().union(*SPLIT.values()) == ALL_CASES
    assert all("kubetune" in cases for cases in SPLIT.values())


@pytest.mark.parametrize("workload", sorted(SPLIT))
def test_throughput_benchmark_runs_its_cases_with_the_tiny_model(workload: str, tmp_path: Path) -> None:
    """Each case (Olive in its own environment included) reports figures, an MFU and a loss curve."""
    figures = tmp_path / "throughput.json"
    result = run_bench(
        "throughput.py",
        *["--model", "tiny", "--steps", "2", "--warmup", "1"],
        *["--workloads", workload, "--cases", ",".join(SPLIT[workload]), "--precision", PRECISION[workload]],
        # The tiny model's tokenizer splits the chat workload's system prompt into ~400 tokens.
        *["--max-seq-length", "512", "--json", str(figures)],
        timeout=900,
    )
    measured = json.loads(figures.read_text())
    assert measured["peakFlops"] > 0 and measured["precision"] == PRECISION[workload]
    assert set(measured["workloads"]) == {workload}
    figures_of = measured["workloads"][workload]
    assert figures_of["flopsPerToken"] > 0
    assert set(figures_of["cases"]) == set(SPLIT[workload])
    for case in figures_of["cases"].values():
        assert case["precision"] == PRECISION[workload], case
        # Of the positions computed, under the peak; of the real tokens, at least as high.
        assert case["realTokensPerSecond"] > 0 and 0 < case["computedMfu"] <= case["mfu"], case
        if PRECISION[workload] == "fp32":
            # A CPU without bf16 instructions times its bf16 peak on a slow fallback, so only fp32's
            # peak bounds the tiny model's matmuls.
            assert case["computedMfu"] < 1, case
        assert len(case["losses"]) >= 3, case
    if workload == "chat":
        # Kubetune computes the system prompt once a step.
        kubetune = figures_of["cases"]["kubetune"]
        assert kubetune["computedTokensPerStep"] < 0.5 * kubetune["realTokensPerStep"], kubetune
    assert result.stdout.count("ratio (real tokens/s, Kubetune / best baseline") == 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", ["hf-dynamic", "trl", "kubetune"])
def test_each_case_trains_at_the_precision_asked_for(
    case: str, precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every case states its precision: TRL's SFTConfig would otherwise turn bf16 on by itself (its
    default), and an fp32 comparison would time TRL in bf16 autocast."""
    import torch

    throughput, train_cases, workloads = (import_bench(m) for m in ("throughput", "train_cases", "workloads"))
    monkeypatch.setattr(train_cases, "PRECISION", precision)
    monkeypatch.setattr(train_cases, "MAX_SEQ_LENGTH", 512)
    folder = throughput.model_dir("tiny")
    trainer, _ = train_cases.BUILDERS[case](workloads.load("tone"), folder, tmp_path / "run", 2)
    assert trainer.args.bf16 is (precision == "bf16")
    assert not trainer.args.fp16
    frozen = {p.dtype for p in trainer.model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    # Mixed precision: the baselines' frozen base in bf16, Kubetune's in fp32 (autocast casts it);
    # the LoRA weights, and so the optimizer state, in fp32 everywhere.
    bf16_base = precision == "bf16" and case != "kubetune"
    assert frozen == {torch.bfloat16 if bf16_base else torch.float32}
    assert trained == {torch.float32}


def test_levers_benchmark_times_every_variant_with_the_tiny_model() -> None:
    result = run_bench(
        "levers.py", "--model", "tiny", "--workloads", "tone", "--rounds", "1", "--batches", "1", timeout=600
    )
    for variant in (
        "every speed-up",
        "without per-example attention (padded rows)",
        "without the shared prefix (each example's own copy)",
        "without the fused head loss",
        "without the labeled-positions head",
        "without the fast dropout masks",
        "without huge pages for the frozen weights",
    ):
        assert f"| {variant} | " in result.stdout, result.stdout


def test_held_out_benchmark_trains_with_and_without_the_speedups_with_the_tiny_model(tmp_path: Path) -> None:
    figures = tmp_path / "held-out.json"
    result = run_bench(
        "held_out.py",
        *["--model", "tiny", "--workloads", "chat", "--seeds", "1", "--steps", "2"],
        *["--max-seq-length", "512", "--json", str(figures)],
        timeout=600,
    )
    measured = json.loads(figures.read_text())
    assert [r["variant"] for r in measured] == ["every speed-up", "without the speed-ups"]
    # The trainer's own final evaluation scored every held-out row.
    assert all(r["rows"] == 40 and 0 <= r["exactMatch"] <= 1 for r in measured), measured
    assert "| 1 | " in result.stdout and "mean difference:" in result.stdout
