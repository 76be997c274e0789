"""The throughput benchmark still runs against the trainer's current API (a smoke run on the tiny model;
the figures themselves are recorded in docs/benchmarks.md, not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_throughput_benchmark_runs_both_cases_on_the_tiny_model() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "hack")}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "throughput.py"),
            "--model",
            "tiny",
            "--steps",
            "2",
            "--warmup",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ratio (real tokens/s, kubetune / baseline):" in result.stdout
