"""Training entrypoint: python -m kubetune_trainer.train --config config.json

config → base model → data → method → HF Trainer → eval → weights + metrics → <output.uri>/...

- lora: an adapter on the fp32 base → <output.uri>/adapter/
- qlora: an adapter on a 4/8-bit bitsandbytes base → <output.uri>/adapter/
- full: every weight trained in fp32 → the whole model (safetensors + tokenizer) → <output.uri>/model/
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_trainer import distributed
from kubetune_trainer import result as run_result
from kubetune_trainer.checkpoints import (
    CheckpointStore,
    CheckpointUploader,
    Preempted,
    PreemptionWatch,
    best_step,
    folder_name,
    restore,
)
from kubetune_trainer.cli import configure_logging, parse_args, run_entrypoint
from kubetune_trainer.config import BaseModelSpec, DatasetSpec, TrainerConfig, load_config
from kubetune_trainer.data import (
    CausalLMCollator,
    Format,
    PackingCollator,
    Splits,
    encode_rows,
    read_rows,
    resolve_format,
    split_rows,
    validate_rows,
)
from kubetune_trainer.distributed import all_gather, weights_digest
from kubetune_trainer.evaluation import STATUS_NAMES
from kubetune_trainer.progress import ProgressCallback, ProgressSink, sink_from_env
from kubetune_trainer.storage import Storage, join_uri, sha256_file

log = logging.getLogger("kubetune_trainer.train")

METRICS_FILE = "training_metrics.json"
# The Trainer's log (loss per logging step, evaluations), saved beside the weights.
LOG_HISTORY_FILE = "training_log.json"
# TensorBoard event files, under <output.uri>/tensorboard/.
TENSORBOARD_DIR = "tensorboard"
# The finished run's result (metrics and artifacts), written last: <output.uri>/training_result.json.
RESULT_FILE = "training_result.json"


def fetch_base_model(spec: BaseModelSpec, storage: Storage, workdir: Path) -> Path:
    """A local HF folder for the base model, downloading it and converting GGUF as needed."""
    from kubetune_trainer.models import ensure_hf_folder

    return ensure_hf_folder(storage.download(spec.uri, workdir / "base"), workdir)


@dataclass(frozen=True)
class DatasetFiles:
    splits: Splits
    sha256: dict[str, str]
    format: Format = "text"


def fetch_dataset(spec: DatasetSpec, storage: Storage, workdir: Path) -> DatasetFiles:
    """The rows of the train (and eval) file, checked against one format (the train file's)."""
    train_path = storage.download(spec.train_uri, workdir / "data" / "train")
    train_rows = read_rows(train_path)
    digests = {"train": sha256_file(train_path)}
    fmt = resolve_format(spec, train_rows, train_path.name)
    validate_rows(spec, fmt, train_rows, train_path.name)
    eval_rows = None
    if spec.eval_uri:
        eval_path = storage.download(spec.eval_uri, workdir / "data" / "eval")
        eval_rows = read_rows(eval_path)
        digests["eval"] = sha256_file(eval_path)
        validate_rows(spec, fmt, eval_rows, eval_path.name)
    return DatasetFiles(split_rows(spec, train_rows, eval_rows), digests, fmt)


def _loss_history(log_history: list[dict[str, Any]], key: str) -> list[float]:
    return [entry[key] for entry in log_history if key in entry]


def training_metrics(
    trainer: Any, result: Any, eval_metrics: dict[str, float], extra: dict[str, Any]
) -> dict:
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


# Where each method's trained weights go under output.uri, and their artifact kind in the result.
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
ARTIFACT_KINDS = {ADAPTER_DIR: "adapter", MODEL_DIR: "merged"}


def trained_dir_name(cfg: TrainerConfig) -> str:
    return ADAPTER_DIR if cfg.uses_adapter else MODEL_DIR


def prepare_model(cfg: TrainerConfig, model: Any) -> Any:
    """The model the Trainer optimizes: a LoRA/DoRA PeftModel, or (full) the model itself."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from kubetune_trainer.peft_config import to_lora_config

    if cfg.method == "full":
        model.requires_grad_(True)
        return model
    if cfg.method == "qlora":
        # Freezes the quantized base, upcasts the remaining weights to fp32 and, when asked, turns on
        # gradient checkpointing with input gradients enabled.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.training.gradient_checkpointing
        )
    return get_peft_model(model, to_lora_config(cfg.lora, model))


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total); peft counts each packed 4-bit weight at its real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_trained(model: Any, tokenizer: Any, metrics: dict[str, Any], out_dir: Path) -> Path:
    """The adapter (lora, qlora) or the whole model as safetensors (full), tokenizer and metrics."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir)  # safetensors
    # The tokenizer travels with the weights so the export job's prompts match training exactly.
    tokenizer.save_pretrained(out_dir)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return out_dir


def _generation_accuracy(
    cfg: TrainerConfig, fmt: Format, model: Any, tokenizer: Any, rows: list[dict]
) -> float | None:
    from kubetune_trainer.generation import generation_accuracy, prompts_from_rows

    n = cfg.training.generation_eval_samples
    if not n or not rows:
        return None
    prompts = prompts_from_rows(cfg.dataset, fmt, tokenizer, rows[:n])
    score, answers = generation_accuracy(model, tokenizer, prompts, cfg.export.max_new_tokens)
    log.info(
        "generation accuracy %.3f on %d held-out rows (first answers: %s)", score, len(prompts), answers[:5]
    )
    return score


def data_collator(cfg: TrainerConfig, pad_token_id: int) -> CausalLMCollator | PackingCollator:
    if cfg.training.packing:
        return PackingCollator(pad_token_id, cfg.training.max_seq_length)
    return CausalLMCollator(pad_token_id)


def set_kv_cache(model: Any, enabled: bool) -> bool:
    """Set the model config's use_cache; returns the previous value. Packing trains without it: with a
    cache (on by default, even in train mode) transformers skips the position-id check that keeps
    packed examples apart, and every token would attend to the earlier examples of its row."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = bool(getattr(base.config, "use_cache", False))
    base.config.use_cache = enabled
    return previous


def restore_checkpoint(store: CheckpointStore, args: Any) -> tuple[Path | None, int]:
    """The newest complete checkpoint of this run, downloaded once per pod into the Trainer's output
    folder (with the best one, see checkpoints.restore); (None, 0) on a first start."""
    # The pod's first process downloads; its other processes then find the folders complete.
    with args.main_process_first(local=True, desc="checkpoint download"):
        latest = restore(store, Path(args.output_dir))
    if latest is None:
        return None, 0
    log.info("resuming from the checkpoint of step %d (%s)", latest.step, latest.uri)
    return Path(args.output_dir) / folder_name(latest.step), latest.step


def evaluation_callbacks(cfg: TrainerConfig) -> list[Any]:
    from transformers import EarlyStoppingCallback

    stopping = cfg.evaluation.early_stopping if cfg.evaluation else None
    if stopping is None:
        return []
    return [EarlyStoppingCallback(stopping.patience, early_stopping_threshold=stopping.min_delta)]


def answer_evaluator(cfg: TrainerConfig, fmt: Format, tokenizer: Any, rows: list[dict]) -> Any:
    from kubetune_trainer.evaluation import AnswerEvaluator
    from kubetune_trainer.generation import prompts_from_rows

    if cfg.evaluation is None or not cfg.evaluation.metrics or not rows:
        return None
    prompts = prompts_from_rows(cfg.dataset, fmt, tokenizer, rows[: cfg.evaluation.samples])
    return AnswerEvaluator(cfg.evaluation, tokenizer, prompts)


def early_stopping_metrics(cfg: TrainerConfig, state: Any) -> dict[str, Any]:
    if cfg.evaluation is None or cfg.evaluation.early_stopping is None:
        return {}
    return {
        "bestStep": best_step(state),
        "bestMetric": state.best_metric,
        "stoppedEarly": 1.0 if state.global_step < state.max_steps else 0.0,
    }


def publish(
    cfg: TrainerConfig, storage: Storage, workdir: Path, trainer: Any, tokenizer: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """Upload the trained weights with the tokenizer, metrics and log, then the run's result document
    (last: it marks the run as trained). Returns that document."""
    group = trained_dir_name(cfg)
    out_dir = save_trained(trainer.model, tokenizer, metrics, workdir / group)
    (out_dir / LOG_HISTORY_FILE).write_text(json.dumps(trainer.state.log_history, indent=1))
    out_uri = join_uri(cfg.output.uri, group)
    entries = storage.upload_dir(out_dir, out_uri)
    outcome = {**metrics, "artifacts": [run_result.folder_artifact(ARTIFACT_KINDS[group], out_uri, entries)]}
    storage.upload_bytes(
        json.dumps(outcome, sort_keys=True).encode(),
        join_uri(cfg.output.uri, RESULT_FILE),
        workdir / "scratch",
    )
    return outcome


def train(cfg: TrainerConfig, workdir: Path, sink: ProgressSink, storage: Storage | None = None) -> dict:
    """Train, resuming from the run's newest checkpoint if there is one. Every process of a distributed
    run calls this; only the main one uploads and returns artifacts, the others their weights digest."""
    from transformers import set_seed

    from kubetune_trainer.hf_trainer import KubetuneTrainer
    from kubetune_trainer.models import load_for_training
    from kubetune_trainer.peft_config import to_training_arguments

    storage = storage or Storage()
    started = time.monotonic()
    finished = storage.read_if_exists(join_uri(cfg.output.uri, RESULT_FILE), workdir / "scratch")
    if finished is not None:
        # This run was trained before (a pod replaced after its upload, or the same spec applied
        # again): report that result instead of training again.
        log.info("run %s is already trained; reporting its stored result", cfg.run_id)
        outcome: dict[str, Any] = json.loads(finished)
        if not distributed.is_main():
            return {"rank": distributed.rank(), "weightsSha256": outcome.get("weightsSha256")}
        sink.metrics(outcome)
        return outcome
    # First, so that a SIGTERM while downloading still ends in a checkpoint at the first step.
    preemption = PreemptionWatch().install()
    base_dir = fetch_base_model(cfg.base_model, storage, workdir)
    model, tokenizer = load_for_training(base_dir, cfg.effective_quantization)
    data = fetch_dataset(cfg.dataset, storage, workdir)
    max_len = cfg.training.max_seq_length
    train_set = encode_rows(cfg.dataset, data.format, data.splits.train, tokenizer, max_len)
    eval_set = encode_rows(cfg.dataset, data.format, data.splits.eval, tokenizer, max_len)
    log.info("data: %s, %d train / %d eval rows", data.format, len(train_set), len(eval_set))

    accuracy_before = _generation_accuracy(cfg, data.format, model, tokenizer, data.splits.eval)
    # The adapter's initial weights come from this seed: a rerun (or a resumed run) starts identically.
    set_seed(cfg.training.seed)
    model = prepare_model(cfg, model)
    trainable, total = parameter_counts(model)
    log.info("%s: %d trainable of %d parameters", cfg.method, trainable, total)
    use_cache = set_kv_cache(model, False) if cfg.training.packing else None
    # Creating the arguments joins the process group of a distributed run.
    args = to_training_arguments(cfg.training, workdir / "trainer", bool(eval_set), cfg.evaluation)
    store = CheckpointStore(storage, cfg.output.uri)
    resume_dir, resumed_step = restore_checkpoint(store, args)
    tensorboard_dir = workdir / TENSORBOARD_DIR
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir)
    tensorboard_uri = join_uri(cfg.output.uri, TENSORBOARD_DIR)
    uploader = CheckpointUploader(store, sink, workdir / "scratch", {tensorboard_dir: tensorboard_uri})
    trainer = KubetuneTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set or None,
        data_collator=data_collator(cfg, tokenizer.pad_token_id),
        callbacks=[ProgressCallback(sink), preemption, uploader, *evaluation_callbacks(cfg)],
        answer_evaluator=answer_evaluator(cfg, data.format, tokenizer, data.splits.eval),
    )
    result = trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
    if preemption.preempted:
        raise Preempted(trainer.state.global_step)
    # With early stopping the Trainer has loaded the best checkpoint: this evaluates what is saved.
    eval_metrics = trainer.evaluate() if eval_set else {}
    if use_cache is not None:
        set_kv_cache(model, use_cache)  # saved configs and generation keep the model's own setting
    digest = weights_digest(model)
    digests = all_gather(digest)
    if not distributed.is_main():
        # Stay until rank 0 has uploaded: a pod that succeeded early would not come back if pod 0
        # then failed and had to rendezvous again.
        distributed.barrier()
        return {"rank": distributed.rank(), "weightsSha256": digest}
    accuracy_after = _generation_accuracy(cfg, data.format, model, tokenizer, data.splits.eval)
    metrics = training_metrics(
        trainer,
        result,
        eval_metrics,
        {
            "trainSamples": len(train_set),
            "evalSamples": len(eval_set),
            "trainableParameters": trainable,
            "evalAccuracyBefore": accuracy_before,
            "evalAccuracyAfter": accuracy_after,
            "datasetSha256": data.sha256,
            "runId": cfg.run_id,
            "resumedFromStep": resumed_step,
            "worldSize": distributed.world_size(),
            "weightsIdentical": 1.0 if len(set(digests)) == 1 else 0.0,
            "weightsSha256": digest,
            "wallSeconds": round(time.monotonic() - started, 1),
            **{STATUS_NAMES[k]: v for k, v in eval_metrics.items() if k in STATUS_NAMES},
            **early_stopping_metrics(cfg, trainer.state),
        },
    )
    uploader.upload_extras()  # the TensorBoard files, complete
    outcome = publish(cfg, storage, workdir, trainer, tokenizer, metrics)
    sink.metrics(metrics)
    distributed.barrier()
    log.info("metrics %s", json.dumps(metrics, sort_keys=True))
    return outcome


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args("python -m kubetune_trainer.train", argv)

    def job() -> str | None:
        cfg = load_config(args.config)
        sink = sink_from_env(args.progress_file, cfg.namespace, main=distributed.is_main())
        outcome = train(cfg, args.workdir, sink)
        if not distributed.is_local_main():
            return None  # the pod's first process speaks for the pod
        if "artifacts" not in outcome:
            return run_result.render_rank(outcome)
        return run_result.render(outcome, outcome.pop("artifacts"))

    return run_entrypoint("train", job)


if __name__ == "__main__":
    sys.exit(main())
