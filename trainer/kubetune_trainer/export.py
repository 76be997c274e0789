"""Export entrypoint: python -m kubetune_trainer.export --config input.json

lora, qlora: fp32 base + <run>/adapter/ → merged safetensors; full: <run>/model/ as is (either one
checked file by file against the sha256 the training result records)
→ ONNX (onnxruntime-genai model builder) → PyTorch-vs-ONNX parity on held-out prompts
→ <run>/{merged,onnx,onnx-adapter}/ and manifest.json (names from kubetune_api.layout)

A qlora adapter is merged into the full-precision base, never into the 4-bit weights it was trained
on: the builder cannot read bitsandbytes weights, and nf4 would be a second, lossy quantization.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubetune_api import TrainerInput
from kubetune_api.layout import (
    ADAPTER_DIR,
    MANIFEST_FILE,
    MERGED_DIR,
    MODEL_DIR,
    ONNX_ADAPTER_DIR,
    ONNX_DIR,
    join_uri,
)
from kubetune_trainer import integrity
from kubetune_trainer.cli import configure_logging, load_input, parse_args, run_entrypoint
from kubetune_trainer.errors import export_error
from kubetune_trainer.manifest import build_manifest, result_document
from kubetune_trainer.onnx_build import (
    SwappableAdapter,
    build_onnx,
    build_swappable_adapter,
    merge_adapter,
)
from kubetune_trainer.parity import ParityReport, check_parity
from kubetune_trainer.publish import trained_digests
from kubetune_trainer.storage import FileEntry, Storage, describe_file
from kubetune_trainer.train import fetch_base_model, fetch_dataset

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

    model: Any  # fp32 PyTorch model for the parity check
    tokenizer: Any
    model_dir: Path  # the HF folder the ONNX model is built from
    trained_dir: Path  # the downloaded adapter/ or model/ (settings and training metrics)
    stored: dict[str, list[FileEntry]]  # groups already in S3, listed in the manifest
    new_folders: dict[str, Path]  # groups this export uploads besides the ONNX ones
    base_dir: Path | None = None  # the fp32 base (lora, qlora)


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
        stored={ADAPTER_DIR: describe_existing(adapter_dir, adapter_uri)},
        # export.mergedModel false: the merged weights only feed the builder.
        new_folders={MERGED_DIR: merged} if job.spec.export.merged_model else {},
        base_dir=base_dir,
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
        stored={MODEL_DIR: describe_existing(model_dir, model_uri)},
        new_folders={},
    )


def build_onnx_models(
    job: TrainerInput, trained: Trained, workdir: Path, timed: _Timer
) -> tuple[Path, SwappableAdapter | None]:
    onnx, out = job.spec.export.onnx, workdir / "export"
    onnx_dir = timed("build", build_onnx, onnx, trained.model_dir, out / ONNX_DIR, workdir / "builder-cache")
    swappable = None
    if onnx.adapter and trained.base_dir is not None:
        swappable = timed(
            "buildAdapter",
            build_swappable_adapter,
            onnx,
            trained.base_dir,
            trained.trained_dir,
            out / ONNX_ADAPTER_DIR,
            workdir / "builder-cache",
        )
    return onnx_dir, swappable


def export(job: TrainerInput, workdir: Path, storage: Storage | None = None) -> dict[str, Any]:
    storage, spec, out, timed = storage or Storage(), job.spec.export, workdir / "export", _Timer()
    layout = job.run.layout
    out.mkdir(parents=True, exist_ok=True)
    # Before the downloads and the merge: without write access nothing of this could be stored.
    storage.check_writable(layout.root, workdir / "scratch")
    fetch_trained = merged_adapter if job.spec.uses_adapter else full_model
    trained = fetch_trained(job, storage, workdir, timed)
    data = fetch_dataset(job.spec.dataset, storage, workdir)

    folders = dict(trained.new_folders)
    report: ParityReport | None = None
    if spec.onnx.enabled:
        onnx_dir, swappable = build_onnx_models(job, trained, workdir, timed)
        folders[ONNX_DIR] = onnx_dir
        if swappable is not None:
            folders[ONNX_ADAPTER_DIR] = out / ONNX_ADAPTER_DIR
        # Held-out prompts; the training rows when the spec holds none out.
        rows = data.splits.eval or data.splits.train
        report = timed(
            "parity",
            check_parity,
            job,
            trained.model,
            trained.tokenizer,
            onnx_dir,
            rows,
            swappable,
            data.format,
        )
        log.info("parity %s", json.dumps(report.to_json()))
        if spec.min_parity is not None and report.parity < spec.min_parity:
            raise export_error(f"ONNX parity {report.parity:.3f} is below export.minParity {spec.min_parity}")

    def upload(group: str, folder: Path) -> list[FileEntry]:
        return storage.upload_dir(folder, layout.folder(group))

    files = dict(trained.stored)
    for group, folder in folders.items():
        files[group] = timed("upload" + group.title().replace("-", ""), upload, group, folder)
    manifest = build_manifest(job, files, trained.trained_dir, data.sha256, report, timed.seconds)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    storage.upload_file(out / MANIFEST_FILE, layout.manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args("python -m kubetune_trainer.export", argv)

    def job() -> str:
        run_input = load_input(args.config)
        manifest = export(run_input, args.workdir)
        return result_document(run_input, manifest, args.workdir / "export" / MANIFEST_FILE)

    return run_entrypoint("export", job)


if __name__ == "__main__":
    sys.exit(main())
