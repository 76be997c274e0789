"""Frozen weights on transparent huge pages: the same values, each in its own storage inside one mapping
advised for huge pages (where the kernel offers them), the trained weights untouched, and the same
losses over 20 steps as in ordinary memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_trainer_speedups import STEPS, case_spec, losses

from kubetune_trainer import huge_pages


def mapping_of(address: int) -> tuple[int, list[str]]:
    """The start and VmFlags of this process's mapping that holds `address` (hg: advised for huge
    pages)."""
    inside, start = False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and head == "VmFlags:":
            return start, line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def lora_model(model_dir: Path) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def test_frozen_weights_move_with_their_values_and_trained_ones_stay(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    model = lora_model(tiny_model_dir)
    values = {name: p.detach().clone() for name, p in model.named_parameters()}
    trained = {name: p.data_ptr() for name, p in model.named_parameters() if p.requires_grad}
    frozen = huge_pages.frozen_weights(model)
    assert frozen and not any(p.requires_grad for p in frozen)

    moved = huge_pages.move_frozen_weights(model)

    assert all(torch.equal(values[name], p) for name, p in model.named_parameters())
    assert {name: p.data_ptr() for name, p in model.named_parameters() if p.requires_grad} == trained
    if not huge_pages.available():  # this kernel gives no transparent huge pages: nothing moves
        assert moved == 0
        return
    assert moved >= sum(p.numel() * p.element_size() for p in frozen)
    # All in the one mapping advised for huge pages, each weight with a storage of its own (so saving
    # the model sees separate tensors, not one shared buffer).
    [(_, flags)] = {(start, tuple(flags)) for start, flags in (mapping_of(p.data_ptr()) for p in frozen)}
    assert "hg" in flags
    assert len({p.untyped_storage().data_ptr() for p in frozen}) == len(frozen)
    assert all(p.data_ptr() % huge_pages.ALIGNMENT == 0 for p in frozen)
    model.base_model.model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").stat().st_size > 0


def test_huge_pages_keep_the_losses(
    tmp_path: Path, tiny_model_dir: Path, tone_dir: Path, make_input: Any
) -> None:
    settings = {"format": "text", "packing": True}
    spec, rows = case_spec(settings, make_input, tiny_model_dir, tone_dir, tmp_path)

    plain, _ = losses(spec, tiny_model_dir, rows, tmp_path / "plain", huge_pages=False)
    moved, _ = losses(spec, tiny_model_dir, rows, tmp_path / "moved", huge_pages=True)

    assert len(plain) == len(moved) == STEPS
    assert max(abs(a - b) for a, b in zip(plain, moved, strict=True)) <= 1e-3, (plain, moved)
    assert plain[-1] < plain[0]
