"""Fixtures for the trainer tests: a tiny random Llama, the tone dataset, trainer inputs on local paths."""

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


# The spec's output.uri must be an S3 URI, but the trainer never reads it: it writes under
# run.outputRoot, which the tests point at a local folder.
OUTPUT_URI = "s3://kubetune-test/runs"
# What the tests were written against, where the API's defaults differ: a loss at every step (the loss
# curves and the resume comparisons need it), no gradient checkpointing, fp32. Laid under every training
# section, including a test's own; a test that wants the API's default sets the key itself.
TRAINING_BASE: dict[str, Any] = {"loggingSteps": 1, "gradientCheckpointing": False, "precision": "fp32"}


def _make_config(base_uri: str, output_root: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": {"uri": base_uri},
        "dataset": {
            "trainUri": str(TONE_DIR / "train.jsonl"),
            "evalUri": str(TONE_DIR / "eval.jsonl"),
            "textTemplate": TONE_TEMPLATE,
        },
        "method": "lora",
        "lora": {"r": 8, "alpha": 16},
        "training": {"maxSteps": 30, "learningRate": 1e-2, "batchSize": 8, "maxSeqLength": 64, "seed": 1},
        # auto precision resolves to fp32 without GPUs.
        "resources": {"gpusPerNode": 0},
        "export": {"targets": [{"precision": "fp32"}], "evalSamples": 8},
        "output": {"uri": OUTPUT_URI},
    }
    spec.update(overrides)
    spec["training"] = {**TRAINING_BASE, **(spec.get("training") or {})}
    return {
        "spec": {k: v for k, v in spec.items() if v is not None},
        "run": {"name": "tone", "namespace": "test", "runId": "run-1", "outputRoot": output_root},
    }


@pytest.fixture(scope="session")
def make_config() -> Any:
    """Builds the trainer's input (kubetune_api.TrainerInput, JSON form) on local paths: the tiny tone
    run, writing under `output_root`. Keyword overrides replace whole spec sections (None drops one,
    e.g. `lora=None` for method full); every training section gets TRAINING_BASE beneath it."""
    return _make_config


@pytest.fixture(scope="session")
def make_input(make_config: Any) -> Any:
    """make_config, parsed: the TrainerInput that train() and export() take."""
    from kubetune_api import parse_trainer_input

    def build(base_uri: str, output_root: str, **overrides: Any) -> Any:
        return parse_trainer_input(make_config(base_uri, output_root, **overrides))

    return build


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
