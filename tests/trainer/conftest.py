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


class LossCurve:
    """A progress sink that keeps the training loss logged at each step (use loggingSteps 1)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []

    def progress(self, progress: dict[str, Any], final: bool = False) -> None:
        self.events.append(dict(progress))

    def metrics(self, metrics: dict[str, Any]) -> None:
        pass

    def checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.checkpoints.append(checkpoint)

    @property
    def losses(self) -> list[float]:
        # Every snapshot carries the latest loss; the last one of a step holds that step's own.
        by_step = {e["step"]: e["loss"] for e in self.events if e["phase"] == "training" and "loss" in e}
        return [by_step[step] for step in sorted(by_step)]

    def assert_falls(self, ratio: float) -> None:
        """The mean of the last 3 logged losses is below `ratio` times the first one."""
        losses = self.losses
        print("loss curve:", " ".join(f"{x:.3f}" for x in losses))
        assert len(losses) >= 4, losses
        tail = sum(losses[-3:]) / 3
        assert tail < ratio * losses[0], f"loss did not fall enough: {[round(x, 3) for x in losses]}"


@pytest.fixture
def loss_curve() -> LossCurve:
    return LossCurve()


@pytest.fixture(scope="session")
def new_loss_curve() -> type[LossCurve]:
    """For module-scoped fixtures, which cannot use `loss_curve`."""
    return LossCurve
