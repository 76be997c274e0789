"""Fixtures for the trainer tests: a tiny random Llama, the tone dataset, configs on local paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
TONE_DIR = REPO / "examples" / "data" / "tone"
TONE_TEMPLATE = "Phrase: {phrase}\nTone: {tone}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from devcluster.model import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tone_dir() -> Path:
    return TONE_DIR


def _make_config(base_uri: str, output_uri: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "tone",
        "namespace": "test",
        "runId": "run-1",
        "baseModel": {"uri": base_uri},
        "dataset": {
            "trainUri": str(TONE_DIR / "train.jsonl"),
            "evalUri": str(TONE_DIR / "eval.jsonl"),
            "textTemplate": TONE_TEMPLATE,
        },
        "lora": {"r": 8, "alpha": 16},
        "training": {"maxSteps": 30, "learningRate": 1e-2, "batchSize": 8, "maxSeqLength": 64, "seed": 1},
        "output": {"uri": output_uri},
        "export": {"precision": "fp32", "parityPrompts": 8},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def make_config() -> Any:
    """Builds a trainer config (JSON form) on local paths; keyword overrides replace whole sections."""
    return _make_config
