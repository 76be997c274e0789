"""The plan's model half: config and tokenizer only, the module tree on the meta device (no weights),
the LoRA targets, the parameter counts and the memory table (memory_estimate.py)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_api import FineTuneJobSpec, LoraSpec, MemoryEstimate, PlanProblem, PlanSeverity
from kubetune_api.v1alpha1 import ModelSource
from kubetune_trainer import memory_estimate as mem
from kubetune_trainer.errors import model_error
from kubetune_trainer.models import discover_target_modules, find_gguf, linear_module_names
from kubetune_trainer.storage import Storage

log = logging.getLogger("kubetune_trainer.plan")

# What a plan never downloads from a model folder: the weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")
# Batch sizes of the memory table besides the spec's own.
TABLE_BATCH_SIZES = (1,)
TABLE_METHODS: tuple[mem.Method, ...] = ("lora", "qlora", "full")


@dataclass
class ModelFacts:
    config: Any
    tokenizer: Any
    base_format: str  # hf or gguf
    shape: mem.ModelShape
    linear_modules: dict[str, list[str]]  # leaf name -> module paths
    linear_shapes: dict[str, tuple[int, int]]  # module path -> (in, out)
    discovered_targets: list[str]
    parameters_by_module: dict[str, int]  # module path -> parameters (its own and below)


def fetch_config_and_tokenizer(source: ModelSource, storage: Storage, workdir: Path) -> tuple[Any, Any, str]:
    """The model's config and tokenizer: from a folder without its weights, or a GGUF file's metadata
    (a GGUF file is one object: it is downloaded whole, and only its metadata is read)."""
    from transformers import AutoConfig, AutoTokenizer

    path = storage.download(source.uri, workdir / "base", skip_suffixes=WEIGHT_SUFFIXES)
    gguf = find_gguf(path)
    try:
        if gguf is not None:
            folder, name = str(gguf.parent), gguf.name
            config = AutoConfig.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
            base_format = "gguf"
        else:
            if not (path / "config.json").is_file():
                raise model_error(
                    f"base model {source.uri} is neither a .gguf file nor a folder with config.json"
                )
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            base_format = "hf"
    except (ValueError, OSError, KeyError) as exc:
        raise model_error(f"cannot read the config and tokenizer of {source.uri}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as models.load_model_and_tokenizer
    return config, tokenizer, base_format


def model_facts(config: Any, tokenizer: Any, base_format: str) -> ModelFacts:
    """The module tree built on the meta device: names, shapes and counts, no memory for weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.fused_head_loss import CHUNK_ROWS
    from kubetune_trainer.labeled_head import head_can_fuse

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (ValueError, KeyError, TypeError) as exc:
        raise model_error(f"cannot build the model from its config: {exc}") from exc
    linear = linear_module_names(model)
    shapes = {
        path: (int(module.in_features), int(module.out_features))
        for path, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    block_linear = sum(i * o for leaf_paths in linear.values() for p in leaf_paths for i, o in [shapes[p]])
    total = sum(p.numel() for p in model.parameters())
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    shape = mem.ModelShape(
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
        num_heads=heads,
        num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        intermediate_size=int(getattr(text, "intermediate_size", None) or 4 * text.hidden_size),
        vocab_size=int(text.vocab_size),
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        total_parameters=int(total),
        block_linear_parameters=int(block_linear),
        head_dim=getattr(text, "head_dim", None),
        head_chunk_rows=CHUNK_ROWS if head_can_fuse(model) else None,
    )
    counts = {
        name: sum(p.numel() for p in module.parameters()) for name, module in model.named_modules() if name
    }
    return ModelFacts(
        config, tokenizer, base_format, shape, linear, shapes, discover_target_modules(model), counts
    )


def resolve_targets(lora: LoraSpec, facts: ModelFacts) -> tuple[list[str], list[PlanProblem]]:
    """The spec's LoRA targets (or the discovered ones), and a problem naming any that is no Linear."""
    targets = sorted(lora.target_modules or facts.discovered_targets)
    missing = sorted(set(targets) - set(facts.linear_modules))
    if not missing:
        return targets, []
    message = (
        f"lora.targetModules {missing} are not Linear layers of this model; "
        f"it has {sorted(facts.linear_modules)}"
    )
    return targets, [PlanProblem(reason="UnknownTargetModules", message=message, severity=PlanSeverity.ERROR)]


def lora_counts(lora: LoraSpec, targets: list[str], facts: ModelFacts) -> tuple[int, tuple[int, ...]]:
    """(trainable parameters, input sizes of one block's adapted layers)."""
    paths = [p for leaf in targets for p in facts.linear_modules.get(leaf, [])]
    trainable = mem.lora_parameters([facts.linear_shapes[p] for p in paths], lora.r, lora.use_dora)
    saved = {
        path
        for name in lora.modules_to_save
        for path in facts.parameters_by_module
        if path == name or path.endswith("." + name)
    }
    trainable += sum(facts.parameters_by_module[p] for p in saved)
    # One block's adapted layers: each target leaf once (the blocks of a model are alike).
    block = tuple(
        facts.linear_shapes[facts.linear_modules[leaf][0]][0]
        for leaf in targets
        if leaf in facts.linear_modules
    )
    return trainable, block


def trainable_parameters(spec: FineTuneJobSpec, targets: list[str], facts: ModelFacts) -> int:
    if spec.lora is None:
        return facts.shape.total_parameters
    return lora_counts(spec.lora, targets, facts)[0]


def memory_table(
    spec: FineTuneJobSpec, targets: list[str], facts: ModelFacts, seq_length: int, labeled_share: float
) -> list[MemoryEstimate]:
    """The spec's own setting first, then lora, qlora and full at the table's batch sizes and the spec's."""
    training = spec.training
    device: mem.Device = "gpu" if spec.resources.gpus_per_node > 0 else "cpu"
    quant = spec.effective_quantization
    lora = spec.lora or LoraSpec()
    lora_targets = targets if spec.lora is not None else facts.discovered_targets
    lora_trainable, lora_inputs = lora_counts(lora, lora_targets, facts)

    def entry(method: mem.Method, batch: int, own: bool) -> MemoryEstimate:
        setting = mem.Setting(
            method=method,
            precision=spec.training_precision,
            batch_size=batch,
            seq_length=seq_length,
            labeled_share=labeled_share,
            gradient_checkpointing=training.gradient_checkpointing,
            trainable_parameters=facts.shape.total_parameters if method == "full" else lora_trainable,
            lora_target_inputs=() if method == "full" else lora_inputs,
            quant_bits=quant.bits if quant else 4,
            double_quant=quant.four_bit_double_quant if quant else True,
            device=device,
        )
        est = mem.estimate(facts.shape, setting)
        terms = [est.weights, est.trainable_state, est.activations, est.logits, est.overhead]
        return MemoryEstimate(
            method=method,
            precision=spec.training_precision,
            batch_size=batch,
            gradient_checkpointing=training.gradient_checkpointing,
            spec=own,
            total_mib=sum(_mib(t) for t in terms),
            weights_mib=_mib(est.weights),
            trainable_state_mib=_mib(est.trainable_state),
            activations_mib=_mib(est.activations),
            logits_mib=_mib(est.logits),
            overhead_mib=_mib(est.overhead),
        )

    table = [entry(spec.method.value, training.batch_size, True)]
    batches = sorted({*TABLE_BATCH_SIZES, training.batch_size})
    table += [entry(m, b, False) for m in TABLE_METHODS for b in batches]
    return table


def _mib(value: int) -> int:
    return math.ceil(value / mem.MiB)
