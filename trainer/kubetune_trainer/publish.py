"""The training's last stage: the final metrics, the trained weights with their tokenizer, metrics and
log uploaded under the run's layout, then the result document (last: it marks the run as trained, and
records the sha256 of every trained file for the export to check), then the checkpoint retention of
spec.output.keepCheckpoints."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from kubetune_api import RunContext, TrainerInput
from kubetune_api.layout import ARTIFACT_KINDS, LOG_HISTORY_FILE, METRICS_FILE
from kubetune_api.v1alpha1 import FineTuneJobSpec
from kubetune_trainer import integrity
from kubetune_trainer import result as run_result
from kubetune_trainer.checkpoints import CheckpointStore, best_step
from kubetune_trainer.errors import TrainerError, storage_error
from kubetune_trainer.storage import Storage

log = logging.getLogger("kubetune_trainer.train")

# The result document's record of the trained folder: {"files": {path: {"sha256", "size"}}}.
TRAINED_FILES = "trainedFiles"


def _loss_history(log_history: list[dict[str, Any]], key: str) -> list[float]:
    return [entry[key] for entry in log_history if key in entry]


def training_metrics(
    trainer: Any, result: Any, eval_metrics: dict[str, float], extra: dict[str, Any]
) -> dict[str, Any]:
    losses = _loss_history(trainer.state.log_history, "loss")
    runtime = result.metrics.get("train_runtime") or 0.0
    tokens = trainer.state.num_input_tokens_seen
    return {
        "trainLoss": result.training_loss,
        "firstLoss": losses[0] if losses else None,
        "lastLoss": losses[-1] if losses else None,
        "evalLoss": eval_metrics.get("eval_loss"),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "trainRuntimeSeconds": round(runtime, 2),
        "secondsPerStep": round(runtime / max(trainer.state.global_step, 1), 3),
        "tokensSeen": tokens,
        "tokensPerSecond": round(tokens / runtime, 1) if runtime else None,
        **extra,
    }


def early_stopping_metrics(spec: FineTuneJobSpec, state: Any) -> dict[str, Any]:
    if spec.evaluation is None or spec.evaluation.early_stopping is None:
        return {}
    return {
        "bestStep": best_step(state),
        "bestMetric": state.best_metric,
        "stoppedEarly": 1.0 if state.global_step < state.max_steps else 0.0,
    }


def save_trained(model: Any, tokenizer: Any, metrics: dict[str, Any], out_dir: Path) -> Path:
    """The adapter (lora, qlora) or the whole model as safetensors (full), tokenizer and metrics."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    # The tokenizer travels with the weights so the export job's prompts match training exactly.
    tokenizer.save_pretrained(out_dir)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return out_dir


def publish(
    job: TrainerInput, storage: Storage, workdir: Path, trainer: Any, tokenizer: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """Upload the trained weights with the tokenizer, metrics and log, then the run's result document
    (last: it marks the run as trained). Returns that document."""
    layout = job.run.layout
    group = layout.trained_dir(job.spec.uses_adapter)
    out_dir = save_trained(trainer.model, tokenizer, metrics, workdir / group)
    (out_dir / LOG_HISTORY_FILE).write_text(json.dumps(trainer.state.log_history, indent=1))
    out_uri = layout.folder(group)
    entries = storage.upload_dir(out_dir, out_uri)
    outcome = {
        **metrics,
        "artifacts": [run_result.folder_artifact(ARTIFACT_KINDS[group], out_uri, entries)],
        TRAINED_FILES: integrity.record(entries),
    }
    storage.upload_bytes(json.dumps(outcome, sort_keys=True).encode(), layout.result, workdir / "scratch")
    return outcome


def stored_result(run: RunContext, storage: Storage, workdir: Path) -> dict[str, Any] | None:
    """The result of this run if it was trained before (a pod replaced after its upload, or the same
    spec applied again)."""
    finished = storage.read_if_exists(run.layout.result, workdir / "scratch")
    return None if finished is None else dict(json.loads(finished))


def trained_digests(run: RunContext, storage: Storage, workdir: Path) -> integrity.Digests:
    """The sha256 of every trained file, as the training's result document records them."""
    result = stored_result(run, storage, workdir)
    if result is None:
        raise storage_error(f"{run.layout.result} does not exist: the run has not finished training")
    return integrity.parse_record(json.dumps(result.get(TRAINED_FILES) or {}), run.layout.result)


def retain_checkpoints(job: TrainerInput, storage: Storage, outcome: dict[str, Any]) -> None:
    """Apply spec.output.keepCheckpoints once the result is stored (a replacement pod then reports it
    and never resumes). A failed deletion is logged, not fatal: the weights are safe already."""
    keep = job.spec.output.keep_checkpoints
    best = outcome.get("bestStep")
    try:
        deleted = CheckpointStore(storage, job.run.layout.root).retain(keep, int(best) if best else None)
    except TrainerError as exc:
        log.warning("keepCheckpoints %s: could not delete every other checkpoint: %s", keep, exc)
        return
    if deleted:
        log.info("keepCheckpoints %s: deleted the checkpoints of steps %s", keep, deleted)


def result_message(job: TrainerInput, outcome: dict[str, Any]) -> str:
    """The termination message of the pod's first process: the result document, fitted to 4 KiB."""
    artifacts = outcome.get("artifacts") or []
    metrics = {k: v for k, v in outcome.items() if k not in ("artifacts", TRAINED_FILES)}
    return run_result.render(metrics, artifacts, job.run.layout.result)
