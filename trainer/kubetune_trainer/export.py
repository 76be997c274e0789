"""Export entrypoint: python -m kubetune_trainer.export --config config.json

lora, qlora: fp32 base + <output.uri>/adapter/ → merged safetensors; full: <output.uri>/model/ as is
→ ONNX (onnxruntime-genai model builder) → PyTorch-vs-ONNX parity on held-out prompts
→ <output.uri>/{merged,onnx}/ and manifest.json

A qlora adapter is merged into the full-precision base, never into the 4-bit weights it was trained
on: the builder cannot read bitsandbytes weights, and nf4 would be a second, lossy quantization.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubetune_trainer import result as run_result
from kubetune_trainer.cli import configure_logging, parse_args, run_entrypoint
from kubetune_trainer.config import ExportSpec, QuantizationSpec, TrainerConfig, load_config
from kubetune_trainer.data import Format
from kubetune_trainer.errors import export_error, model_error
from kubetune_trainer.storage import FileEntry, Storage, describe_file, join_uri
from kubetune_trainer.train import (
    ADAPTER_DIR,
    METRICS_FILE,
    MODEL_DIR,
    fetch_base_model,
    fetch_dataset,
    trained_dir_name,
)

log = logging.getLogger("kubetune_trainer.export")

MANIFEST_FILE = "manifest.json"
T = TypeVar("T")
_BUILDER_LOG_TAIL = 3000


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> tuple[Any, Any]:
    """Fold the LoRA weights into the base model and save the result as a plain HF folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from kubetune_trainer.models import load_model_and_tokenizer

    base, _ = load_model_and_tokenizer(base_dir, torch.float32)
    try:
        model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise model_error(f"cannot apply adapter {adapter_dir} to {base_dir}: {exc}") from exc
    # The adapter folder holds the tokenizer the model was trained with.
    tokenizer = AutoTokenizer.from_pretrained(
        adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def builder_arguments(
    spec: ExportSpec, input_dir: Path, onnx_dir: Path, cache_dir: Path, extra_options: tuple[str, ...] = ()
) -> list[str]:
    """The model builder's command line for the configured precision and execution provider."""
    args = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(input_dir), "-o", str(onnx_dir), "-p", spec.precision, "-e", spec.execution_provider,
        "-c", str(cache_dir),
    ]  # fmt: skip
    extra = ["hf_token=false", *extra_options]
    if spec.precision == "int4":
        int4 = spec.int4
        extra += [f"algo_config={int4.algo}", f"block_size={int4.block_size}"]
        if int4.mixed_precision:
            extra.append(f"matmul_mixed_precision={int4.mixed_precision}")
        if int4.accuracy_level is not None:
            extra.append(f"accuracy_level={int4.accuracy_level}")
    return [*args, "--extra_options", *extra]


def build_onnx(
    spec: ExportSpec, input_dir: Path, onnx_dir: Path, cache_dir: Path, extra_options: tuple[str, ...] = ()
) -> Path:
    if onnx_dir.exists():
        shutil.rmtree(onnx_dir)
    cmd = builder_arguments(spec, input_dir, onnx_dir, cache_dir, extra_options)
    log.info("building ONNX: %s", " ".join(cmd))
    # A subprocess: the builder edits sys.path, prints progress bars and holds its own copy of the
    # weights; its memory is returned when it exits.
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0 or not (onnx_dir / "genai_config.json").is_file():
        tail = (result.stdout + result.stderr)[-_BUILDER_LOG_TAIL:]
        raise export_error(f"ONNX model builder failed (exit {result.returncode}): {tail}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    return onnx_dir


@dataclass(frozen=True)
class SwappableAdapter:
    """A base ONNX model whose LoRA weights are inputs, and the adapter file that fills them."""

    model_dir: Path
    adapter_file: Path


def build_swappable_adapter(
    spec: ExportSpec, base_dir: Path, adapter_dir: Path, out_dir: Path, cache_dir: Path
) -> SwappableAdapter:
    from kubetune_trainer.onnx_adapter import (
        lora_nodes_to_exclude,
        make_lora_inputs,
        peft_to_onnx_params,
        write_onnx_adapter,
    )

    options = [f"adapter_path={adapter_dir}"]
    if spec.precision in ("int4", "int8"):
        # Quantizing the small LoRA matrices costs accuracy and saves nothing.
        options.append(f"nodes_to_exclude={','.join(lora_nodes_to_exclude(adapter_dir))}")
    model_dir = build_onnx(spec, base_dir, out_dir / "model", cache_dir, tuple(options))
    params = peft_to_onnx_params(adapter_dir)
    genai = json.loads((model_dir / "genai_config.json").read_text())
    make_lora_inputs(model_dir / genai["model"]["decoder"]["filename"], sorted(params))
    return SwappableAdapter(model_dir, write_onnx_adapter(params, out_dir / "adapter.onnx_adapter"))


@dataclass(frozen=True)
class ParityReport:
    prompts: int
    first_n_tokens: int
    parity: float
    accuracy_torch: float | None
    accuracy_onnx: float | None
    tokenizer_agreement: float
    onnx_seconds: float
    torch_seconds: float
    # With a swappable adapter: its outputs against the merged ONNX model's, and its accuracy.
    adapter_parity: float | None = None
    accuracy_onnx_adapter: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def check_parity(
    cfg: TrainerConfig,
    model: Any,
    tokenizer: Any,
    onnx_dir: Path,
    rows: list[dict],
    swappable: SwappableAdapter | None = None,
    data_format: Format = "text",
) -> ParityReport:
    """Greedy-generate held-out prompts with PyTorch and ONNX Runtime GenAI and compare."""
    from kubetune_trainer.generation import (
        accuracy,
        answer_text,
        encode,
        eos_ids,
        ort_greedy,
        ort_tokenizer_agreement,
        parity,
        prompts_from_rows,
        torch_greedy,
    )

    spec, eos = cfg.export, eos_ids(tokenizer, model)
    prompts = prompts_from_rows(cfg.dataset, data_format, tokenizer, rows[: spec.parity_prompts])
    ids = [encode(tokenizer, p.text) for p in prompts]
    expected = [p.answer for p in prompts]

    def score(outputs: list[list[int]]) -> float | None:
        return accuracy([answer_text(tokenizer, t) for t in outputs], expected) if prompts else None

    start = time.monotonic()
    torch_out = torch_greedy(model, tokenizer, ids, spec.max_new_tokens)
    torch_seconds = time.monotonic() - start
    start = time.monotonic()
    onnx_out = ort_greedy(onnx_dir, ids, spec.max_new_tokens, eos)
    onnx_seconds = time.monotonic() - start
    adapter_out = None
    if swappable is not None:
        adapter_out = ort_greedy(swappable.model_dir, ids, spec.max_new_tokens, eos, swappable.adapter_file)
    return ParityReport(
        prompts=len(prompts),
        first_n_tokens=spec.parity_tokens,
        parity=parity(torch_out, onnx_out, spec.parity_tokens),
        accuracy_torch=score(torch_out),
        accuracy_onnx=score(onnx_out),
        tokenizer_agreement=ort_tokenizer_agreement(onnx_dir, [p.text for p in prompts], ids),
        onnx_seconds=round(onnx_seconds, 2),
        torch_seconds=round(torch_seconds, 2),
        adapter_parity=parity(onnx_out, adapter_out, spec.parity_tokens) if adapter_out is not None else None,
        accuracy_onnx_adapter=score(adapter_out) if adapter_out is not None else None,
    )


def describe_existing(folder: Path, uri: str) -> list[FileEntry]:
    """Manifest entries for files already stored at `uri` (the adapter the trainer uploaded)."""
    return [
        describe_file(p, p.relative_to(folder).as_posix(), join_uri(uri, p.relative_to(folder).as_posix()))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def lora_manifest(trained_dir: Path) -> dict[str, Any] | None:
    """The adapter's settings as peft saved them; None for a full fine-tune (no adapter)."""
    config_file = trained_dir / "adapter_config.json"
    if not config_file.is_file():
        return None
    adapter_config = json.loads(config_file.read_text())
    return {
        "r": adapter_config.get("r"),
        "alpha": adapter_config.get("lora_alpha"),
        "dropout": adapter_config.get("lora_dropout"),
        "targetModules": sorted(adapter_config.get("target_modules") or []),
        "modulesToSave": adapter_config.get("modules_to_save"),
        "useDora": bool(adapter_config.get("use_dora")),
    }


def build_manifest(
    cfg: TrainerConfig,
    files: dict[str, list[FileEntry]],
    trained_dir: Path,
    dataset_sha256: dict[str, str],
    report: ParityReport,
    timings: dict[str, float],
) -> dict[str, Any]:
    metrics_file = trained_dir / METRICS_FILE
    quantization = cfg.effective_quantization
    return {
        "name": cfg.name,
        "namespace": cfg.namespace,
        "runId": cfg.run_id,
        "specHash": cfg.spec_hash(),
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "baseModel": cfg.base_model.model_dump(mode="json", by_alias=True),
        "method": cfg.method,
        "lora": lora_manifest(trained_dir),
        # qlora: the base-weight quantization training ran on (the export merges into fp32).
        "quantization": quantization_manifest(quantization) if quantization is not None else None,
        "dataset": {**cfg.dataset.model_dump(mode="json", by_alias=True), "sha256": dataset_sha256},
        "export": {**cfg.export.model_dump(mode="json", by_alias=True), "timings": timings},
        "metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
        "parity": report.to_json(),
        "files": {group: [e.to_json() for e in entries] for group, entries in files.items()},
    }


def quantization_manifest(spec: QuantizationSpec) -> dict[str, Any]:
    if spec.bits == 8:
        return {"bits": 8}
    return {
        "bits": 4,
        "quantType": spec.four_bit_type,
        "doubleQuant": spec.four_bit_double_quant,
        "computeDtype": spec.four_bit_compute_dtype,
    }


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
    new_folders: dict[str, Path]  # groups this export uploads besides onnx/
    base_dir: Path | None = None  # the fp32 base (lora, qlora)


def merged_adapter(cfg: TrainerConfig, storage: Storage, workdir: Path, timed: _Timer) -> Trained:
    """lora, qlora: the adapter merged into the fp32 base (never into 4-bit weights)."""
    base_dir = timed("downloadBase", fetch_base_model, cfg.base_model, storage, workdir)
    adapter_uri = join_uri(cfg.output.uri, ADAPTER_DIR)
    adapter_dir = storage.download(adapter_uri, workdir / "adapter-in")
    merged = workdir / "export" / "merged"
    model, tokenizer = timed("merge", merge_adapter, base_dir, adapter_dir, merged)
    return Trained(
        model=model,
        tokenizer=tokenizer,
        model_dir=merged,
        trained_dir=adapter_dir,
        stored={ADAPTER_DIR: describe_existing(adapter_dir, adapter_uri)},
        new_folders={"merged": merged},
        base_dir=base_dir,
    )


def full_model(cfg: TrainerConfig, storage: Storage, workdir: Path, timed: _Timer) -> Trained:
    """full: the fine-tuned model the trainer uploaded is already the model to export."""
    import torch

    from kubetune_trainer.models import load_model_and_tokenizer

    model_uri = join_uri(cfg.output.uri, MODEL_DIR)
    model_dir = timed("downloadModel", storage.download, model_uri, workdir / "model-in")
    model, tokenizer = load_model_and_tokenizer(model_dir, torch.float32)
    return Trained(
        model=model,
        tokenizer=tokenizer,
        model_dir=model_dir,
        trained_dir=model_dir,
        stored={MODEL_DIR: describe_existing(model_dir, model_uri)},
        new_folders={},
    )


def export(cfg: TrainerConfig, workdir: Path, storage: Storage | None = None) -> dict[str, Any]:
    storage, spec, out, timed = storage or Storage(), cfg.export, workdir / "export", _Timer()
    out.mkdir(parents=True, exist_ok=True)
    fetch_trained = merged_adapter if trained_dir_name(cfg) == ADAPTER_DIR else full_model
    trained = fetch_trained(cfg, storage, workdir, timed)
    data = fetch_dataset(cfg.dataset, storage, workdir)

    onnx_dir = timed("build", build_onnx, spec, trained.model_dir, out / "onnx", workdir / "builder-cache")
    swappable = None
    if spec.onnx_adapter and trained.base_dir is not None:
        swappable = timed(
            "buildAdapter",
            build_swappable_adapter,
            spec,
            trained.base_dir,
            trained.trained_dir,
            out / "onnx-adapter",
            workdir / "builder-cache",
        )
    report = timed(
        "parity",
        check_parity,
        cfg,
        trained.model,
        trained.tokenizer,
        onnx_dir,
        data.splits.eval,
        swappable,
        data.format,
    )
    log.info("parity %s", json.dumps(report.to_json()))
    if spec.min_parity is not None and report.parity < spec.min_parity:
        raise export_error(f"ONNX parity {report.parity:.3f} is below export.minParity {spec.min_parity}")

    def upload(group: str, folder: Path) -> list[FileEntry]:
        return storage.upload_dir(folder, join_uri(cfg.output.uri, group))

    files = dict(trained.stored)
    folders = {**trained.new_folders, "onnx": onnx_dir}
    if swappable is not None:
        folders["onnx-adapter"] = out / "onnx-adapter"
    for group, folder in folders.items():
        files[group] = timed("upload" + group.title().replace("-", ""), upload, group, folder)
    manifest = build_manifest(cfg, files, trained.trained_dir, data.sha256, report, timed.seconds)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    storage.upload_file(out / MANIFEST_FILE, join_uri(cfg.output.uri, MANIFEST_FILE))
    return manifest


# A full fine-tune's model/ is the merged model: there is no adapter to merge.
ARTIFACT_KINDS = {
    "adapter": "adapter",
    "merged": "merged",
    "model": "merged",
    "onnx": "onnx",
    "onnx-adapter": "onnxAdapter",
}


def result_document(cfg: TrainerConfig, manifest: dict[str, Any], manifest_file: Path) -> str:
    """What the operator puts in status: one artifact per folder plus the manifest, and parity."""
    artifacts = [
        run_result.folder_artifact(
            ARTIFACT_KINDS[group], join_uri(cfg.output.uri, group), entries_of(entries)
        )
        for group, entries in manifest["files"].items()
    ]
    artifacts.append(
        run_result.file_artifact("manifest", join_uri(cfg.output.uri, MANIFEST_FILE), manifest_file)
    )
    renamed = {"prompts": "parityPrompts", "firstNTokens": "parityFirstNTokens"}
    parity = {renamed.get(k, k): v for k, v in manifest["parity"].items()}
    return run_result.render(parity, artifacts)


def entries_of(entries: list[dict[str, Any]]) -> list[FileEntry]:
    return [FileEntry(**e) for e in entries]


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args("python -m kubetune_trainer.export", argv)

    def job() -> str:
        cfg = load_config(args.config)
        manifest = export(cfg, args.workdir)
        return result_document(cfg, manifest, args.workdir / "export" / MANIFEST_FILE)

    return run_entrypoint("export", job)


if __name__ == "__main__":
    sys.exit(main())
