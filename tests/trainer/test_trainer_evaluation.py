"""Evaluation: perplexity and task metrics at each evaluation, early stopping on a named metric that keeps
the best checkpoint, and TensorBoard event files beside the weights."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from kubetune_api.layout import RESULT_FILE
from kubetune_trainer.data import sample_rows
from kubetune_trainer.evaluation import (
    exact_match,
    macro_f1,
    perplexity,
    rouge_l,
    status_metrics,
    task_scores,
)
from kubetune_trainer.progress import JsonFileSink


def test_exact_match_ignores_case_and_spacing() -> None:
    assert exact_match(["Positive", " negative ", "neutral"], ["positive", "negative", "positive"]) == 2 / 3
    assert exact_match([], []) == 0.0


def test_macro_f1_averages_over_the_gold_labels() -> None:
    # positive: precision 1/2, recall 1/1 -> 2/3; negative: precision 0, recall 0 -> 0; mean 1/3.
    predictions = ["positive", "positive", "banana"]
    golds = ["positive", "negative", "negative"]
    assert macro_f1(predictions, golds) == pytest.approx(1 / 3)
    assert macro_f1(golds, golds) == 1.0


def test_rouge_l_rewards_the_longest_common_subsequence() -> None:
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    # 5 of 6 tokens in order on both sides: F = 5/6.
    assert rouge_l(["the cat is on the mat"], ["the cat sat on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l(["completely different"], ["the cat sat"]) == 0.0


def test_task_scores_use_the_trainer_keys_and_perplexity_is_exp_loss() -> None:
    scores = task_scores(["exactMatch", "f1", "rougeL"], ["a b"], ["a b"])
    assert scores == {"exact_match": 1.0, "f1": 1.0, "rouge_l": 1.0}
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert math.isfinite(perplexity(10_000.0))
    assert status_metrics({"eval_loss": 1.5, "eval_f1": 0.5, "loss": 3.0, "epoch": 1}) == {
        "evalLoss": 1.5,
        "evalF1": 0.5,
    }


STOPPING_EVALUATION = {
    "metrics": ["exactMatch", "f1", "rougeL"],
    "samples": 6,
    "maxNewTokens": 4,
    "earlyStopping": {"metric": "evalLoss", "patience": 2, "minDelta": 100.0},
}


@pytest.fixture(scope="module")
def stopped_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, make_input: Any
) -> dict[str, Any]:
    """A tiny run that evaluates every 2 steps and stops once 2 evaluations improve by less than
    minDelta 100 (none can): it must stop at step 6 of 40."""
    from kubetune_trainer.train import train

    root = tmp_path_factory.mktemp("early-stop")
    job = make_input(
        str(tiny_model_dir),
        str(root / "out"),
        training={"maxSteps": 40, "learningRate": 1e-2, "batchSize": 8, "maxSeqLength": 64, "evalSteps": 2},
        evaluation=STOPPING_EVALUATION,
    )
    sink = JsonFileSink(root / "progress.jsonl")
    metrics = train(job, root / "work", sink)
    return {"root": root, "metrics": metrics, "events": sink.read()}


def test_early_stopping_stops_after_patience_evaluations(stopped_run: dict[str, Any]) -> None:
    metrics = stopped_run["metrics"]
    assert metrics["steps"] == 6
    assert metrics["stoppedEarly"] == 1.0


def test_the_best_checkpoint_is_what_is_saved(stopped_run: dict[str, Any]) -> None:
    root, metrics = stopped_run["root"], stopped_run["metrics"]
    log = json.loads((root / "out" / "adapter" / "training_log.json").read_text())
    evaluations = {e["step"]: e["eval_loss"] for e in log if "eval_loss" in e and e["step"] <= 6}
    assert sorted(evaluations) == [2, 4, 6]
    best = min(evaluations, key=lambda step: evaluations[step])
    assert metrics["bestStep"] == best
    assert metrics["bestMetric"] == pytest.approx(evaluations[best])
    # The adapter written at the end holds the best checkpoint's weights, and its eval loss.
    saved = load_file(root / "out" / "adapter" / "adapter_model.safetensors")
    checkpoint = load_file(root / "out" / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert saved.keys() == checkpoint.keys()
    assert all((saved[k] == checkpoint[k]).all() for k in saved)
    assert metrics["evalLoss"] == pytest.approx(evaluations[best], rel=1e-5)


def test_every_evaluation_reports_perplexity_and_task_metrics(stopped_run: dict[str, Any]) -> None:
    reported = [e for e in stopped_run["events"] if e["kind"] == "metrics" and "evalLoss" in e]
    assert len(reported) >= 3  # three evaluations during training, one at the end, the final metrics
    for entry in reported:
        assert entry["evalPerplexity"] == pytest.approx(math.exp(entry["evalLoss"]), rel=1e-6)
        for name in ("evalExactMatch", "evalF1", "evalRougeL"):
            assert 0.0 <= entry[name] <= 1.0


def test_task_metrics_answer_a_seeded_sample_of_the_held_out_rows(
    tmp_path: Path, tiny_model_dir: Path, tone_dir: Path, make_input: Any
) -> None:
    """evaluation.samples rows drawn with dataset.seed, not the file's first rows (files are often sorted
    by label); the same rows on every run."""
    from kubetune_trainer.data import read_rows
    from kubetune_trainer.storage import Storage
    from kubetune_trainer.train import load_inputs

    job = make_input(
        str(tiny_model_dir),
        str(tmp_path / "out"),
        training={"maxSteps": 4, "evalSteps": 2},
        evaluation=STOPPING_EVALUATION,
    )
    rows = read_rows(tone_dir / "eval.jsonl")
    expected = sample_rows(rows, 6, job.spec.dataset.seed)
    assert expected != rows[:6]
    inputs = load_inputs(job.spec, Storage(), tmp_path / "work")
    assert inputs.answer_rows == expected
    assert load_inputs(job.spec, Storage(), tmp_path / "again").answer_rows == expected


def test_the_result_reports_how_many_rows_the_task_metrics_scored(stopped_run: dict[str, Any]) -> None:
    assert stopped_run["metrics"]["taskMetricRows"] == 6
    stored = json.loads((stopped_run["root"] / "out" / RESULT_FILE).read_text())
    assert stored["taskMetricRows"] == 6


def test_tensorboard_event_files_hold_the_curves(stopped_run: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = stopped_run["root"] / "out" / "tensorboard"
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "eval/loss",
        "eval/perplexity",
        "eval/exact_match",
        "eval/f1",
        "eval/rouge_l",
    } <= tags
    assert [e.step for e in events.Scalars("eval/loss")][:3] == [2, 4, 6]


def test_checkpoints_are_pruned_to_the_newest_and_the_best(stopped_run: dict[str, Any]) -> None:
    folders = sorted(p.name for p in (stopped_run["root"] / "out" / "checkpoints").iterdir())
    best = f"checkpoint-{stopped_run['metrics']['bestStep']}"
    assert best in folders
    assert set(folders) <= {best, "checkpoint-4", "checkpoint-6"}
