"""The plan's memory estimate against a measured training run: SmolLM2-135M in fp32 on the CPU, two
steps through the trainer's real path (load_inputs, build_trainer, run_training) in a process of its
own (memory_probe.py): its peak RSS during the steps minus its RSS before the model loaded must be
within 25% of the plan's estimate for the spec's own setting (the CPU estimate has no CUDA context).

Rows of 200 words cut at 128 tokens, batch 2: activations and logits weigh as much as the LoRA
weights, so the test checks them, not only the parameter arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer.plan import plan

pytestmark = pytest.mark.slow

TOLERANCE = 0.25
PROBE = Path(__file__).with_name("memory_probe.py")
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards")


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from devcluster.model import smollm2

    return smollm2(verify=False)


@pytest.mark.parametrize(
    ("method", "checkpointing"),
    [("lora", False), ("lora", True), ("full", False)],
)
def test_estimate_within_25_percent_of_measured_cpu_training(
    method: str, checkpointing: bool, smollm2_dir: Path, make_config: Any, tmp_path: Path
) -> None:
    rows = [{"text": " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(200))} for i in range(16)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = make_config(
        str(smollm2_dir),
        str(tmp_path / "out"),
        method=method,
        lora={"r": 8} if method == "lora" else None,
        dataset={"trainUri": str(data), "textTemplate": "{text}"},
        training={
            "maxSteps": 2,
            "batchSize": 2,
            "maxSeqLength": 128,
            "gradientCheckpointing": checkpointing,
            "saveSteps": 1000,
        },
        export={"enabled": False},
    )
    config_path = tmp_path / "input.json"
    config_path.write_text(json.dumps(config))
    from kubetune_api import parse_trainer_input

    estimate = plan(parse_trainer_input(config), tmp_path / "plan").memory[0]
    assert estimate.spec and estimate.method == method and estimate.overhead_mib < 512  # no CUDA context
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(PROBE), str(config_path), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])["trainingBytes"] / 2**20
    ratio = estimate.total_mib / measured
    print(
        f"{method} checkpointing={checkpointing}: estimate {estimate.total_mib} MiB, "
        f"measured {measured:.0f} MiB, ratio {ratio:.2f}"
    )
    assert abs(ratio - 1) <= TOLERANCE, (estimate, measured)
