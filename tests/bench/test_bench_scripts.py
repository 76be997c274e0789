"""The throughput benchmark still runs against the trainer's current API (a smoke run on the tiny model;
the figures themselves are recorded in docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_throughput_benchmark_runs_every_case_on_both_workloads_with_the_tiny_model(tmp_path: Path) -> None:
    """Every case, Olive in its own environment included, reports figures, an MFU and a loss curve."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack")}
    figures = tmp_path / "throughput.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "throughput.py"),
            *["--model", "tiny", "--steps", "2", "--warmup", "1"],
            # The tiny model's tokenizer splits the chat workload's system prompt into ~400 tokens.
            *["--max-seq-length", "512", "--json", str(figures)],
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    measured = json.loads(figures.read_text())
    assert measured["peakFlops"] > 0
    assert set(measured["workloads"]) == {"tone", "chat"}
    for workload in measured["workloads"].values():
        assert workload["flopsPerToken"] > 0
        assert set(workload["cases"]) == {"hf-dynamic", "trl", "olive", "kubetune-plain", "kubetune"}
        for case in workload["cases"].values():
            assert case["realTokensPerSecond"] > 0 and 0 < case["mfu"] < 1, case
            assert len(case["losses"]) >= 3, case
    assert result.stdout.count("ratio (real tokens/s, Kubetune / best baseline") == 2
