"""Export entrypoint: python -m kubetune_trainer.export --config input.json

1. the trained weights: lora, qlora: the adapter merged into the fp32 base; full: <run>/model/ as is
   (checked file by file against the sha256 the training result records);
2. held-out rows answered by that PyTorch model: the reference every target is measured against;
3. per export target: the ONNX model (onnxruntime-genai model builder), and with export.adapter a
   swappable .onnx_adapter for the shared, content-addressed base (shared_base.py); each measured on
   the held-out rows (quality.py) and held to export.gate (gate.py);
4. promotion: all targets pass (or there is no gate) → the files go under <run>/ and manifest.json is
   written last; any target fails → everything goes under <run>/rejected/, the run fails with
   QUALITY_GATE, and nothing is promoted. A run whose manifest is already promoted is reported as
   stored, never built or written again.

A qlora adapter is merged into the full-precision base, never into the 4-bit weights it was trained
on: the builder cannot read bitsandbytes weights, and nf4 would be a second, lossy quantization.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from kubetune_api import TrainerInput
from kubetune_api.layout import (
    ADAPTER_DIR,
    ADAPTER_RECORD_FILE,
    MERGED_DIR,
    MODEL_DIR,
    ONNX_ADAPTER_DIR,
    ONNX_ADAPTER_FILE,
    ONNX_DIR,
    REJECTED_DIR,
    SHARED_BASES_DIR,
    join_uri,
)
from kubetune_api.manifest import ArtifactRecord, GateRecord, Manifest, TargetRecord
from kubetune_api.v1alpha1 import ArtifactKind, ExportTarget, GateResult
from kubetune_trainer import integrity, quality, shared_base
from kubetune_trainer.cli import configure_logging, load_input, parse_args, run_entrypoint
from kubetune_trainer.errors import quality_gate_error
from kubetune_trainer.gate import judge, overall
from kubetune_trainer.manifest import artifact_record, build_manifest, manifest_json, result_document
from kubetune_trainer.onnx_adapter import peft_to_onnx_params
from kubetune_trainer.onnx_build import build_lora_base, build_onnx, merge_adapter, write_adapter_file
from kubetune_trainer.publish import trained_digests
from kubetune_trainer.storage import FileEntry, Storage, describe_file
from kubetune_trainer.train import SHARED_BASES, exports_shared_bases, fetch_base_model, fetch_dataset

log = logging.getLogger("kubetune_trainer.export")

T = TypeVar("T")


def describe_existing(folder: Path, uri: str) -> list[FileEntry]:
    """Manifest entries for files already stored at `uri` (the adapter the trainer uploaded)."""
    return [
        describe_file(p, p.relative_to(folder).as_posix(), join_uri(uri, p.relative_to(folder).as_posix()))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def fetch_trained_folder(job: TrainerInput, group: str, storage: Storage, workdir: Path) -> Path:
    """The trainer's adapter/ or model/, every file checked against the training result's record."""
    uri = job.run.layout.folder(group)
    expected = trained_digests(job.run, storage, workdir)
    folder = storage.download(uri, workdir / f"{group}-in")
    integrity.verify_folder(folder, expected, uri)
    return folder


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        start = time.monotonic()
        result = fn(*args)
        self.seconds[f"{name}Seconds"] = round(time.monotonic() - start, 2)
        return result


@dataclass(frozen=True)
class Trained:
    """What training left, made ready for the builder."""

    model: Any  # fp32 PyTorch model: the reference the targets are measured against
    tokenizer: Any
    model_dir: Path  # the HF folder the ONNX models are built from
    trained_dir: Path  # the downloaded adapter/ or model/ (settings and training metrics)
    stored: ArtifactRecord  # the trained weights, already in S3
    merged_dir: Path | None = None  # merged safetensors to upload (export.mergedModel)
    base_dir: Path | None = None  # the fp32 base (lora, qlora)
    base_sha256: str | None = None


def merged_adapter(job: TrainerInput, storage: Storage, workdir: Path, timed: _Timer) -> Trained:
    """lora, qlora: the adapter merged into the fp32 base (never into 4-bit weights)."""
    base_dir = timed("downloadBase", fetch_base_model, job.spec.base_model, storage, workdir)
    adapter_uri = job.run.layout.folder(ADAPTER_DIR)
    adapter_dir = fetch_trained_folder(job, ADAPTER_DIR, storage, workdir)
    merged = workdir / "export" / MERGED_DIR
    model, tokenizer = timed("merge", merge_adapter, base_dir, adapter_dir, merged)
    return Trained(
        model=model,
        tokenizer=tokenizer,
        model_dir=merged,
        trained_dir=adapter_dir,
        stored=artifact_record(
            ArtifactKind.ADAPTER, adapter_uri, describe_existing(adapter_dir, adapter_uri)
        ),
        # export.mergedModel false: the merged weights only feed the builder.
        merged_dir=merged if job.spec.export.merged_model else None,
        base_dir=base_dir,
        base_sha256=shared_base.weights_digest(base_dir),
    )


def full_model(job: TrainerInput, storage: Storage, workdir: Path, timed: _Timer) -> Trained:
    """full: the fine-tuned model the trainer uploaded is already the model to export."""
    import torch

    from kubetune_trainer.models import load_model_and_tokenizer

    model_uri = job.run.layout.folder(MODEL_DIR)
    model_dir = timed("downloadModel", fetch_trained_folder, job, MODEL_DIR, storage, workdir)
    model, tokenizer = load_model_and_tokenizer(model_dir, torch.float32)
    return Trained(
        model=model,
        tokenizer=tokenizer,
        model_dir=model_dir,
        trained_dir=model_dir,
        stored=artifact_record(ArtifactKind.MERGED, model_uri, describe_existing(model_dir, model_uri)),
    )


@dataclass
class BuiltTarget:
    """One target, built and measured here, not yet stored."""

    target: ExportTarget
    onnx_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    gate: GateRecord = field(default_factory=lambda: GateRecord(result=GateResult.NONE))
    base: shared_base.SharedBase | None = None
    adapter_dir: Path | None = None  # adapter.onnx_adapter and adapter.json

    @property
    def name(self) -> str:
        return self.target.name


def shared_base_for(
    job: TrainerInput, target: ExportTarget, trained: Trained, storage: Storage, workdir: Path
) -> shared_base.SharedBase:
    """The stored base for this content address, or one built here (stored only on promotion)."""
    assert trained.base_dir is not None and trained.base_sha256 is not None
    inputs = shared_base.key_inputs(
        trained.base_sha256, target, list(peft_to_onnx_params(trained.trained_dir))
    )
    key = shared_base.base_key(inputs)
    uri = join_uri(job.shared_bases_root, key)
    stored = shared_base.find_stored(storage, uri, key, workdir)
    if stored is not None:
        log.info("reusing the shared base %s for %s", uri, target.name)
        return stored
    model_dir = build_lora_base(
        target, trained.base_dir, trained.trained_dir, workdir / f"base-{key}", workdir / "builder-cache"
    )
    return shared_base.SharedBase(key, uri, model_dir, inputs, reused=False)


def build_target(
    job: TrainerInput,
    target: ExportTarget,
    trained: Trained,
    reference: quality.HeldOut | None,
    storage: Storage,
    workdir: Path,
    timed: _Timer,
) -> BuiltTarget:
    out = workdir / "export" / "targets" / target.name
    onnx_dir = timed(
        f"build:{target.name}",
        build_onnx,
        target,
        trained.model_dir,
        out / ONNX_DIR,
        workdir / "builder-cache",
    )
    built = BuiltTarget(target, onnx_dir)
    if reference is not None:
        built.metrics = timed(f"measure:{target.name}", quality.measure, job, reference, onnx_dir)
    if job.spec.export.adapter and trained.base_dir is not None:
        built.base = timed(f"base:{target.name}", shared_base_for, job, target, trained, storage, workdir)
        built.adapter_dir = out / ONNX_ADAPTER_DIR
        adapter_file = write_adapter_file(trained.trained_dir, built.adapter_dir / ONNX_ADAPTER_FILE)
        record = shared_base.adapter_record(built.base, job.spec.base_model.revision, target.name)
        (built.adapter_dir / ADAPTER_RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        if reference is not None:
            pair = quality.measure(job, reference, built.base.local_dir, adapter_file)
            built.metrics.update(quality.with_prefix("adapter", pair))
    built.gate = judge(job.spec.export.gate, built.metrics, with_adapter=built.base is not None)
    log.info("target %s: %s, gate %s", target.name, json.dumps(built.metrics), built.gate.result.value)
    return built


def publish(
    job: TrainerInput,
    trained: Trained,
    built: list[BuiltTarget],
    promoted: bool,
    storage: Storage,
    workdir: Path,
) -> list[ArtifactRecord]:
    """Upload everything built here: under the run when promoted, under <run>/rejected/ when not. A
    promoted shared base is stored once for every job (never overwritten); a rejected run's own base
    build goes to rejected/ with the rest."""
    layout, rejected = job.run.layout, not promoted

    def upload(kind: ArtifactKind, folder: Path, group: str, target: str | None = None) -> ArtifactRecord:
        uri = layout.export_folder(group, target, rejected=rejected)
        return artifact_record(kind, uri, storage.upload_dir(folder, uri), target)

    records = [trained.stored]
    if trained.merged_dir is not None:
        records.append(upload(ArtifactKind.MERGED, trained.merged_dir, MERGED_DIR))
    for b in built:
        records.append(upload(ArtifactKind.ONNX, b.onnx_dir, ONNX_DIR, b.name))
        if b.base is None or b.adapter_dir is None:
            continue
        records.append(upload(ArtifactKind.ONNX_ADAPTER, b.adapter_dir, ONNX_ADAPTER_DIR, b.name))
        if b.base.reused:
            entries = shared_base.listed(storage, b.base.uri, workdir / "base-listing")
            records.append(artifact_record(ArtifactKind.ONNX_BASE, b.base.uri, entries, b.name))
        elif promoted:
            entries, found = shared_base.store(storage, b.base, workdir, job.run.output_root)
            b.base = replace(b.base, reused=found)
            records.append(artifact_record(ArtifactKind.ONNX_BASE, b.base.uri, entries, b.name))
        else:
            records.append(upload(ArtifactKind.ONNX_BASE, b.base.local_dir, SHARED_BASES_DIR, b.name))
    return records


def target_record(b: BuiltTarget) -> TargetRecord:
    base = None
    if b.base is not None:
        base = {"key": b.base.key, "uri": b.base.uri, "reused": b.base.reused}
    return TargetRecord.model_validate(
        {
            "name": b.name,
            "settings": b.target.to_k8s(),
            "metrics": b.metrics,
            "gate": b.gate,
            "sharedBase": base,
        }
    )


@dataclass(frozen=True)
class Exported:
    manifest: Manifest
    manifest_file: Path
    manifest_uri: str
    metrics: dict[str, Any]  # run-level figures for status.metrics


def stored_export(job: TrainerInput, storage: Storage, workdir: Path) -> Exported | None:
    """The promoted manifest of this run, if an earlier export already wrote it."""
    uri, scratch = job.run.layout.export_manifest(), workdir / "stored-manifest"
    text = storage.read_if_exists(uri, scratch)
    if text is None:
        return None
    manifest = Manifest.model_validate_json(text)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "manifest.json"
    path.write_text(text)
    return Exported(manifest, path, uri, {k: v for k, v in manifest.export.items() if k.startswith("eval")})


def export(job: TrainerInput, workdir: Path, storage: Storage | None = None) -> Exported:
    storage, spec, out, timed = storage or Storage(), job.spec.export, workdir / "export", _Timer()
    layout = job.run.layout
    out.mkdir(parents=True, exist_ok=True)
    # Before the downloads and the merge: without write access nothing of this could be stored.
    storage.check_writable(layout.root, workdir / "scratch")
    if exports_shared_bases(job.spec):
        storage.check_writable(job.shared_bases_root, workdir / "scratch", SHARED_BASES)
    stored = stored_export(job, storage, workdir)
    if stored is not None:
        log.info("run %s is already exported; reporting its promoted manifest", job.run.run_id)
        return stored
    fetch_trained = merged_adapter if job.spec.uses_adapter else full_model
    trained = fetch_trained(job, storage, workdir, timed)
    data = fetch_dataset(job.spec.dataset, storage, workdir)

    reference = None
    if spec.targets and spec.eval_samples > 0:
        # Held-out rows; the training rows when the spec holds none out.
        rows = data.splits.eval or data.splits.train
        reference = timed(
            "reference", quality.held_out, job, trained.model, trained.tokenizer, rows, data.format
        )
    built = [build_target(job, t, trained, reference, storage, workdir, timed) for t in spec.targets]
    verdict = overall({b.name: b.gate for b in built})
    promoted = verdict.result != GateResult.FAILED
    artifacts = publish(job, trained, built, promoted, storage, workdir)

    figures: dict[str, Any] = {}
    if reference is not None:
        figures = {
            "evalRows": len(reference.prompts),
            **quality.with_prefix("evalTorch", reference.torch_metrics),
        }
    manifest = build_manifest(
        job,
        promoted=promoted,
        base_sha256=trained.base_sha256,
        trained_dir=trained.trained_dir,
        dataset_sha256=data.sha256,
        export_figures={**figures, "timings": timed.seconds},
        gate=verdict,
        targets=[target_record(b) for b in built],
        artifacts=artifacts,
    )
    manifest_file, manifest_uri = out / "manifest.json", layout.export_manifest(rejected=not promoted)
    manifest_file.write_text(manifest_json(manifest))
    storage.upload_file(manifest_file, manifest_uri)  # last: a promoted manifest marks the export done
    if not promoted:
        raise quality_gate_error(
            f"quality gate failed ({'; '.join(verdict.failures)}); nothing was promoted, the export is "
            f"under {layout.folder(REJECTED_DIR)}/"
        )
    return Exported(manifest, manifest_file, manifest_uri, figures)


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args("python -m kubetune_trainer.export", argv)

    def job() -> str:
        run_input = load_input(args.config)
        done = export(run_input, args.workdir)
        return result_document(run_input, done.manifest, done.manifest_file, done.manifest_uri, done.metrics)

    return run_entrypoint("export", job)


if __name__ == "__main__":
    sys.exit(main())
