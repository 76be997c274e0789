"""`kubetune finetune`'s flags to a FineTuneJob: each flag lands in its one spec field, Olive's flag
names work, and the API models refuse a bad combination before anything is sent. The console script
itself prints the YAML with -o yaml (no cluster needed)."""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from cli_support import KUBETUNE

from kubetune_cli.job_flags import FinetuneFlags, FlagError, finetunejob

EXPECTED = Path(__file__).parent / "expected"
UPDATE = os.environ.get("KUBETUNE_UPDATE_EXPECTED") == "1"

# `olive finetune` spelled the way Olive's docs spell it; only --output is ours (an S3 prefix).
OLIVE_STYLE = [
    "finetune",
    "--name=tone",
    "--method=qlora",
    "--model_name_or_path=s3://models/SmolLM2-135M-Instruct/",
    "--data_files=s3://data/tone/train.jsonl",
    # Typed in a shell, \n is two characters: the CLI reads it as a newline.
    "--text_template=Phrase: {phrase}\\nTone: {tone}",
    "--max_steps=60",
    "--learning_rate=0.001",
    "--per_device_train_batch_size=8",
    "--max_seq_len=128",
    "--lora_r=16",
    "--lora_alpha=32",
    "--target_modules=q_proj,v_proj",
    "--torch_dtype=bfloat16",
    "--eval_data=s3://data/tone/eval.jsonl",
    "--output_path=s3://runs/tone",
    "--credentials-secret=s3-credentials",
    "--export-target=int4:cpu",
    "--export-target=fp16:cuda",
    "--adapter",
    "--set=training.warmupRatio=0.1",
    "-o",
    "yaml",
]


def test_olive_style_flags_print_the_expected_finetunejob() -> None:
    done = subprocess.run([KUBETUNE, *OLIVE_STYLE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    actual = yaml.safe_load(done.stdout)
    path = EXPECTED / "finetune-olive-style.yaml"
    if UPDATE:
        path.write_text(yaml.safe_dump(actual, sort_keys=False))
    expected = yaml.safe_load(path.read_text())
    assert actual == expected, "\n".join(
        difflib.unified_diff(
            yaml.safe_dump(expected).splitlines(), yaml.safe_dump(actual).splitlines(), "expected", "actual"
        )
    )


def flags(**changes: object) -> FinetuneFlags:
    base: dict[str, object] = {
        "model": "s3://models/base/",
        "data": "s3://data/train.jsonl",
        "output": "s3://runs/x",
    }
    return FinetuneFlags(**{**base, **changes})  # type: ignore[arg-type]


def test_only_what_was_set_is_sent_and_a_name_is_generated() -> None:
    body = finetunejob(flags())
    assert body["metadata"] == {"generateName": "finetune-"}
    assert body["spec"] == {
        "baseModel": {"uri": "s3://models/base/"},
        "dataset": {"trainUri": "s3://data/train.jsonl"},
        "method": "lora",
        "output": {"uri": "s3://runs/x"},
        "lora": {},
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "full", "lora_r": 8}, "need --method lora or qlora"),
        ({"no_export": True, "adapter": True}, "--no-export cannot be combined"),
        ({"learning_rate": 2.0}, "training.learningRate"),
        ({"text_template": "Q: {q}", "data_format": "chat"}, "textTemplate only applies to format text"),
        ({"precision": "fp16", "gpus": 0}, "fp16 needs GPUs"),
        ({"output": "https://example.com/x"}, "output.uri must be an S3 URI"),
        ({"settings": ("training.maxSteps",)}, "expected FIELD.PATH=VALUE"),
        ({"settings": ("training.noSuchField=1",)}, "noSuchField"),
        ({"export_targets": ("fp16:cpu",)}, "fp16 needs executionProvider cuda"),
    ],
)
def test_a_bad_combination_is_refused_with_the_apis_message(changes: dict[str, object], message: str) -> None:
    with pytest.raises(FlagError, match=message.replace(".", r"\.")):
        finetunejob(flags(**changes))


def test_an_invalid_flag_is_a_usage_error_of_the_console_script() -> None:
    done = subprocess.run(
        [
            KUBETUNE,
            *("finetune", "-m", "s3://models/b/", "-d", "s3://data/t.jsonl", "--output", "s3://runs/x"),
            *("--learning-rate", "5", "-o", "yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert (
        "invalid FineTuneJob: spec.training.learningRate (--learning-rate): Input should be" in done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_help_reads_well() -> None:
    done = subprocess.run(
        [KUBETUNE, "finetune", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert done.returncode == 0
    for flag in (
        "--model_name_or_path",
        "--text-template",
        "--lora-r",
        "--export-target",
        "--wait",
        "--dry-run",
    ):
        assert flag in done.stdout, flag
    for panel in ("Model and data", "Training", "LoRA", "Export", "Output (S3)"):
        assert panel in done.stdout, panel


def test_a_typed_backslash_n_in_a_template_is_a_newline() -> None:
    body = finetunejob(flags(text_template="Q: {q}\\nA: {a}\\\\n"))
    assert body["spec"]["dataset"]["textTemplate"] == "Q: {q}\nA: {a}\\n"


def test_shell_completion_completes_commands() -> None:
    completion = {"_KUBETUNE_COMPLETE": "complete_bash", "COMP_WORDS": "kubetune des", "COMP_CWORD": "1"}
    done = subprocess.run(
        [KUBETUNE], capture_output=True, text=True, timeout=60, env={**os.environ, **completion}
    )
    assert done.returncode == 0 and done.stdout.split() == ["describe"], done
