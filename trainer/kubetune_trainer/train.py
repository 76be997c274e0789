"""Training entrypoint: python -m kubetune_trainer.train --config input.json

A main of four stages: load the inputs (base model and data, after checking that the run's output
is writable) → build the HF Trainer (method, collator, callbacks, resume) → train → publish (weights,
metrics and the result document, under the run's layout from kubetune_api.layout; see publish.py).

- lora: an adapter on the fp32 base → <run>/adapter/
- qlora: an adapter on a 4/8-bit bitsandbytes base → <run>/adapter/
- full: every weight trained → the whole model (safetensors + tokenizer) → <run>/model/
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_api import TrainerInput
from kubetune_api.v1alpha1 import DatasetSpec, FineTuneJobSpec, ModelSource
from kubetune_trainer import distributed
from kubetune_trainer import result as run_result
from kubetune_trainer.checkpoints import (
    CheckpointLost,
    CheckpointStore,
    CheckpointUploader,
    Preempted,
    PreemptionWatch,
    folder_name,
    restore,
)
from kubetune_trainer.cli import configure_logging, load_input, parse_args, run_entrypoint
from kubetune_trainer.data import (
    CausalLMCollator,
    Example,
    Format,
    PackingCollator,
    Row,
    Splits,
    encode_rows,
    read_rows,
    resolve_format,
    sample_rows,
    split_rows,
    validate_rows,
)
from kubetune_trainer.distributed import all_gather, weights_digest
from kubetune_trainer.evaluation import STATUS_NAMES
from kubetune_trainer.progress import ProgressCallback, ProgressSink, sink_from_env
from kubetune_trainer.publish import (
    early_stopping_metrics,
    publish,
    result_message,
    retain_checkpoints,
    stored_result,
    training_metrics,
)
from kubetune_trainer.storage import Storage, sha256_file

log = logging.getLogger("kubetune_trainer.train")


# ---- stage 1: inputs ---------------------------------------------------------------------------------


def fetch_base_model(spec: ModelSource, storage: Storage, workdir: Path) -> Path:
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


@dataclass
class Inputs:
    model: Any
    tokenizer: Any
    data: DatasetFiles
    train_set: list[Example]
    eval_set: list[Example]
    # The held-out rows the task metrics and the before/after accuracy answer (sampled once).
    answer_rows: list[Row]


def load_inputs(spec: FineTuneJobSpec, storage: Storage, workdir: Path) -> Inputs:
    from kubetune_trainer.models import load_for_training

    base_dir = fetch_base_model(spec.base_model, storage, workdir)
    model, tokenizer = load_for_training(base_dir, spec.effective_quantization)
    data = fetch_dataset(spec.dataset, storage, workdir)
    max_len = spec.training.max_seq_length
    train_set = encode_rows(spec.dataset, data.format, data.splits.train, tokenizer, max_len)
    eval_set = encode_rows(spec.dataset, data.format, data.splits.eval, tokenizer, max_len)
    log.info("data: %s, %d train / %d eval rows", data.format, len(train_set), len(eval_set))
    samples = spec.evaluation.samples if spec.evaluation else 0
    answer_rows = sample_rows(data.splits.eval, samples, spec.dataset.seed)
    return Inputs(model, tokenizer, data, train_set, eval_set, answer_rows)


# ---- stage 2: the HF Trainer ------------------------------------------------------------------------


def prepare_model(spec: FineTuneJobSpec, model: Any) -> Any:
    """The model the Trainer optimizes: a LoRA/DoRA PeftModel, or (full) the model itself."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from kubetune_trainer.peft_config import to_lora_config

    if spec.lora is None:  # full: the API forbids a lora section there
        model.requires_grad_(True)
        return model
    if spec.effective_quantization is not None:
        # Freezes the quantized base, upcasts the remaining weights to fp32 and, when asked, turns on
        # gradient checkpointing with input gradients enabled.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.training.gradient_checkpointing
        )
    return get_peft_model(model, to_lora_config(spec.lora, model))


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total); peft counts each packed 4-bit weight at its real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def data_collator(
    spec: FineTuneJobSpec, pad_token_id: int, per_example_rows: bool = False
) -> CausalLMCollator | PackingCollator:
    """Packed or padded batches; per_example_rows (per_example_rows_for) lets packed batches of short
    examples become one row attended per example."""
    if spec.training.packing:
        return PackingCollator(pad_token_id, spec.training.max_seq_length, per_example_rows)
    return CausalLMCollator(pad_token_id)


def per_example_rows_for(spec: FineTuneJobSpec, model: Any) -> bool:
    """Whether this job's packed batches may be one row attended per example (per_example_attention)."""
    from kubetune_trainer import per_example_attention

    training = spec.training
    return training.packing and per_example_attention.usable(
        model, training.max_seq_length, training.gradient_checkpointing
    )


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


def evaluation_callbacks(spec: FineTuneJobSpec) -> list[Any]:
    from transformers import EarlyStoppingCallback

    stopping = spec.evaluation.early_stopping if spec.evaluation else None
    if stopping is None:
        return []
    return [EarlyStoppingCallback(stopping.patience, early_stopping_threshold=stopping.min_delta)]


def answer_evaluator(spec: FineTuneJobSpec, inputs: Inputs) -> Any:
    from kubetune_trainer.evaluation import AnswerEvaluator
    from kubetune_trainer.generation import prompts_from_rows

    if spec.evaluation is None or not spec.evaluation.metrics or not inputs.answer_rows:
        return None
    prompts = prompts_from_rows(spec.dataset, inputs.data.format, inputs.tokenizer, inputs.answer_rows)
    return AnswerEvaluator(spec.evaluation, inputs.tokenizer, prompts)


@dataclass
class Session:
    """A built HF Trainer and what training needs beside it."""

    trainer: Any
    preemption: PreemptionWatch
    uploader: CheckpointUploader
    resume_dir: Path | None
    resumed_step: int
    trainable: int
    kv_cache: bool | None  # the model's own use_cache, to restore after packed training


def build_trainer(
    job: TrainerInput,
    inputs: Inputs,
    storage: Storage,
    workdir: Path,
    sink: ProgressSink,
    preemption: PreemptionWatch,
) -> Session:
    from transformers import set_seed

    from kubetune_trainer.hf_trainer import KubetuneTrainer
    from kubetune_trainer.peft_config import to_training_arguments

    spec, layout = job.spec, job.run.layout
    # The adapter's initial weights come from this seed: a rerun (or a resumed run) starts identically.
    set_seed(spec.training.seed)
    model = prepare_model(spec, inputs.model)
    trainable, total = parameter_counts(model)
    log.info("%s: %d trainable of %d parameters", spec.method, trainable, total)
    kv_cache = set_kv_cache(model, False) if spec.training.packing else None
    # Creating the arguments joins the process group of a distributed run.
    args = to_training_arguments(spec, workdir / "trainer", bool(inputs.eval_set))
    store = CheckpointStore(storage, layout.root)
    resume_dir, resumed_step = restore_checkpoint(store, args)
    tensorboard_dir = workdir / "tensorboard"
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir)
    uploader = CheckpointUploader(store, sink, workdir / "scratch", {tensorboard_dir: layout.tensorboard})
    trainer = KubetuneTrainer(
        model=model,
        args=args,
        train_dataset=inputs.train_set,
        eval_dataset=inputs.eval_set or None,
        data_collator=data_collator(spec, inputs.tokenizer.pad_token_id, per_example_rows_for(spec, model)),
        callbacks=[ProgressCallback(sink), preemption, uploader, *evaluation_callbacks(spec)],
        answer_evaluator=answer_evaluator(spec, inputs),
    )
    return Session(trainer, preemption, uploader, resume_dir, resumed_step, trainable, kv_cache)


# ---- stage 3: train ----------------------------------------------------------------------------------


def generation_accuracy(spec: FineTuneJobSpec, inputs: Inputs, model: Any) -> float | None:
    """Exact match of greedy answers on the sampled held-out rows, with evaluation.scoreBaseModel."""
    from kubetune_trainer.generation import generation_accuracy as accuracy
    from kubetune_trainer.generation import prompts_from_rows

    if spec.evaluation is None or not spec.evaluation.score_base_model or not inputs.answer_rows:
        return None
    prompts = prompts_from_rows(spec.dataset, inputs.data.format, inputs.tokenizer, inputs.answer_rows)
    score, answers = accuracy(model, inputs.tokenizer, prompts, spec.evaluation.max_new_tokens)
    log.info("generation accuracy %.3f on %d held-out rows (first: %s)", score, len(prompts), answers[:5])
    return score


@dataclass
class Trained:
    result: Any
    eval_metrics: dict[str, float]
    digest: str
    identical: bool


def run_training(session: Session) -> Trained:
    trainer = session.trainer
    result = trainer.train(resume_from_checkpoint=str(session.resume_dir) if session.resume_dir else None)
    if session.preemption.preempted:
        step = int(trainer.state.global_step)
        # Every rank must exit with the same code (the launcher reports one per pod): rank 0, the only
        # uploader, tells the others whether the checkpoint of the stop is stored.
        lost = session.uploader.lost_on_stop(step)
        if distributed.any_rank(lost is not None):
            raise CheckpointLost(step, lost or "rank 0 could not upload it")
        raise Preempted(step)
    # With early stopping the Trainer has loaded the best checkpoint: this evaluates what is shipped.
    eval_metrics = trainer.evaluate() if trainer.eval_dataset else {}
    if session.kv_cache is not None:
        set_kv_cache(trainer.model, session.kv_cache)  # saved configs keep the model's own setting
    digest = weights_digest(trainer.model)
    digests = all_gather(digest)
    return Trained(result, eval_metrics, digest, len(set(digests)) == 1)


SHARED_BASES = "the shared base ONNX models (export.sharedBaseUri)"


def exports_shared_bases(spec: FineTuneJobSpec) -> bool:
    return spec.export.enabled and spec.export.adapter and bool(spec.export.targets)


# ---- main --------------------------------------------------------------------------------------------


def train(job: TrainerInput, workdir: Path, sink: ProgressSink, storage: Storage | None = None) -> dict:
    """Train, resuming from the run's newest checkpoint if there is one. Every process of a distributed
    run calls this; only the main one uploads and returns artifacts, the others their weights digest."""
    storage = storage or Storage()
    spec, started = job.spec, time.monotonic()
    if distributed.is_main():
        # Before anything slow: without write access no checkpoint or result could ever be stored.
        storage.check_writable(job.run.layout.root, workdir / "scratch")
        if exports_shared_bases(spec):
            # Nor the export's shared base: found now, not after hours of training.
            storage.check_writable(job.shared_bases_root, workdir / "scratch", SHARED_BASES)
    finished = stored_result(job.run, storage, workdir)
    if finished is not None:
        log.info("run %s is already trained; reporting its stored result", job.run.run_id)
        if not distributed.is_main():
            return {"rank": distributed.rank(), "weightsSha256": finished.get("weightsSha256")}
        retain_checkpoints(job, storage, finished)  # again: the first pod may have stopped before it
        sink.metrics(finished)
        return finished
    # First, so that a SIGTERM while downloading still ends in a checkpoint at the first step.
    preemption = PreemptionWatch().install()
    inputs = load_inputs(spec, storage, workdir)
    accuracy_before = generation_accuracy(spec, inputs, inputs.model)
    session = build_trainer(job, inputs, storage, workdir, sink, preemption)
    trained = run_training(session)
    trainer = session.trainer
    if not distributed.is_main():
        # Stay until rank 0 has uploaded: a pod that succeeded early would not come back if pod 0
        # then failed and had to rendezvous again.
        distributed.barrier()
        return {"rank": distributed.rank(), "weightsSha256": trained.digest}
    accuracy_after = generation_accuracy(spec, inputs, trainer.model)
    metrics = training_metrics(
        trainer,
        trained.result,
        trained.eval_metrics,
        {
            "trainSamples": len(inputs.train_set),
            "evalSamples": len(inputs.eval_set),
            # How many held-out rows the task metrics were scored on (a seeded sample, or all).
            "taskMetricRows": len(inputs.answer_rows) if spec.evaluation is not None else None,
            "trainableParameters": session.trainable,
            "evalAccuracyBefore": accuracy_before,
            "evalAccuracyAfter": accuracy_after,
            "datasetSha256": inputs.data.sha256,
            "runId": job.run.run_id,
            "resumedFromStep": session.resumed_step,
            "worldSize": distributed.world_size(),
            "weightsIdentical": 1.0 if trained.identical else 0.0,
            "weightsSha256": trained.digest,
            "wallSeconds": round(time.monotonic() - started, 1),
            **{STATUS_NAMES[k]: v for k, v in trained.eval_metrics.items() if k in STATUS_NAMES},
            **early_stopping_metrics(spec, trainer.state),
        },
    )
    session.uploader.upload_extras()  # the TensorBoard files, complete
    outcome = publish(job, storage, workdir, trainer, inputs.tokenizer, metrics)
    retain_checkpoints(job, storage, outcome)
    sink.metrics(metrics)
    distributed.barrier()
    log.info("metrics %s", json.dumps(metrics, sort_keys=True))
    return outcome


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args("python -m kubetune_trainer.train", argv)

    def job() -> str | None:
        run_input = load_input(args.config)
        sink = sink_from_env(args.progress_file, run_input.run.namespace, main=distributed.is_main())
        outcome = train(run_input, args.workdir, sink)
        if not distributed.is_local_main():
            return None  # the pod's first process speaks for the pod
        if "artifacts" not in outcome:
            return run_result.render_rank(outcome)
        return result_message(run_input, outcome)

    return run_entrypoint("train", job)


if __name__ == "__main__":
    sys.exit(main())
