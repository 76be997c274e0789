"""`kubetune pull` and `kubetune generate`: a run's exported bundle, verified against its manifest, on
the user's machine, and a prompt answered there by the exported ONNX model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kubetune_api import ArtifactKind, DatasetSpec
from kubetune_api.spec_sources import template_fields
from kubetune_cli import s3
from kubetune_cli.bundle import Bundle, fetch, open_bundle
from kubetune_cli.kube import EXIT_ARTIFACTS, EXIT_FAILED, CliError

errors = Console(stderr=True)

FORMATS = ("text", "chat", "promptCompletion")
INSTALL_HINT = (
    "kubetune generate runs the model locally with onnxruntime-genai and transformers: install the "
    "`trainer` extra (pip install 'kubetune[trainer]')"
)
# The first row of a JSONL training file tells its format; a row longer than this is not read.
FIRST_ROW_BYTES = 1024 * 1024

CredentialsFromSecret = Annotated[
    bool,
    typer.Option(
        "--credentials-from-secret",
        help="Read S3 with the keys of the Secret spec.output.credentialsSecretRef names (through the "
        "API) instead of your own AWS credentials (environment or profile).",
    ),
]


def pull(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The FineTuneJob.")],
    directory: Annotated[Path, typer.Argument(help="Where the bundle goes (created if missing).")],
    target: Annotated[
        str | None, typer.Option(help="Only this export target's artifacts, e.g. int4-cpu.")
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="Only artifacts of this kind (repeatable): "
            + ", ".join(
                k.value for k in ArtifactKind if k not in (ArtifactKind.MANIFEST, ArtifactKind.METRICS)
            )
            + "."
        ),
    ] = None,
    credentials_from_secret: CredentialsFromSecret = False,
) -> None:
    """Download the current run's exported artifacts, each file checked against the manifest's sha256
    and size (and the manifest against the sha256 in the job's status)."""
    from kubetune_cli.main import console, kube

    cluster = kube(ctx)
    client, bundle = open_bundle(cluster, name, credentials_from_secret)
    picked = bundle.select(kind or (), target)
    warn_if_rejected(bundle)
    folders = fetch(client, bundle, picked, directory, errors)
    files = sum(len(a.files) for a, _ in picked)
    size = sum(f.size for a, _ in picked for f in a.files)
    console.print(
        f"pulled {files} files ({size} bytes) of run {bundle.manifest.run_id}, verified, to {directory}"
    )
    for (artifact, _), folder in zip(picked, folders, strict=True):
        console.print(f"  {artifact.kind.value}{'/' + artifact.target if artifact.target else ''}: {folder}")


def warn_if_rejected(bundle: Bundle) -> None:
    if not bundle.manifest.promoted:
        errors.print(
            f"warning: this export failed its gate ({'; '.join(bundle.manifest.gate.failures)}); "
            "these are the rejected artifacts",
            highlight=False,
        )


def generate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The FineTuneJob.")],
    prompt: Annotated[
        str,
        typer.Argument(
            help="The prompt: the value of the text template's one input field (or a JSON object of its "
            "fields), the user turn of a chat (or a JSON list of messages), or a promptCompletion prompt."
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option(help="Export target, e.g. int4-cpu; default: the only one the run exported."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to generate.")] = 64,
    data_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="text, chat or promptCompletion; default: the job's (from the spec, or as the trainer "
            "detects it, from the first row of the training data).",
        ),
    ] = None,
    show_prompt: Annotated[
        bool, typer.Option("--show-prompt", help="Print the formatted prompt to stderr.")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="KUBETUNE_CACHE_DIR",
            help="Where pulled models are kept; default: $XDG_CACHE_HOME/kubetune or ~/.cache/kubetune.",
        ),
    ] = None,
    credentials_from_secret: CredentialsFromSecret = False,
) -> None:
    """Answer a prompt with the run's exported ONNX model, locally (onnxruntime-genai), with the prompt
    formatted as the trainer formats its held-out rows."""
    from kubetune_cli.main import console, kube

    if data_format is not None and data_format not in FORMATS:
        raise CliError(f"--format {data_format}: expected one of {', '.join(FORMATS)}", 2)
    runtime = _runtime()
    cluster = kube(ctx)
    client, bundle = open_bundle(cluster, name, credentials_from_secret)
    model_target, adapter_target = choose_target(bundle, target)
    picked = bundle.select([model_target[0]], model_target[1])
    if adapter_target is not None:
        picked += bundle.select([ArtifactKind.ONNX_ADAPTER.value], adapter_target)
    warn_if_rejected(bundle)
    run = bundle.manifest
    folders = fetch(
        client, bundle, picked, (cache_dir or default_cache()) / run.namespace / run.name / run.run_id, errors
    )
    model_dir = folders[0]
    adapter_file = _adapter_file(folders[1]) if adapter_target is not None else None

    tokenizer = runtime.tokenizer(model_dir)
    dataset = bundle.job.spec.dataset
    fmt = data_format or resolve_format(dataset, client)
    text = runtime.prompt_text(dataset, fmt, tokenizer, prompt)
    if show_prompt:
        errors.print(f"prompt ({fmt}):\n{text}", highlight=False, markup=False)
    console.print(
        runtime.answer(model_dir, tokenizer, text, max_new_tokens, adapter_file),
        markup=False,
        highlight=False,
    )


def choose_target(bundle: Bundle, target: str | None) -> tuple[tuple[str, str | None], str | None]:
    """The artifact to run: (kind, target) of a whole ONNX model, or of the shared base with the
    target's .onnx_adapter (then its target is returned second)."""
    arts = bundle.manifest.artifacts
    onnx = [a.target for a in arts if a.kind == ArtifactKind.ONNX]
    adapters = [a.target for a in arts if a.kind == ArtifactKind.ONNX_ADAPTER]
    available = sorted({t for t in onnx + adapters if t})
    if target is None:
        if not available:
            raise CliError(f"{bundle.job.metadata.name} exported no ONNX model", EXIT_ARTIFACTS)
        if len(available) > 1:
            raise CliError(
                f"{bundle.job.metadata.name} exported several targets ({', '.join(available)}): "
                "pick one with --target",
                2,
            )
        target = available[0]
    if target in onnx:
        return (ArtifactKind.ONNX.value, target), None
    if target in adapters:
        return (ArtifactKind.ONNX_BASE.value, target), target
    raise CliError(
        f"{bundle.job.metadata.name} has no ONNX target {target}; "
        f"it exported: {', '.join(available) or 'none'}",
        2,
    )


def _adapter_file(folder: Path) -> Path:
    found = sorted(folder.glob("*.onnx_adapter"))
    if not found:
        raise CliError(f"{folder} holds no .onnx_adapter", EXIT_FAILED)
    return found[0]


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubetune"


def resolve_format(dataset: DatasetSpec, client: Any) -> str:
    """The job's data format as the trainer resolves it: the spec's, text with a template, else what
    the first row of the training data looks like."""
    if dataset.format != "auto":
        return dataset.format
    if dataset.template is not None:
        return "text"
    uri = dataset.train_uri
    if not (uri.startswith("s3://") and uri.endswith(".jsonl")):
        raise CliError(
            f"the job's dataset.format is auto and its training data ({uri}) is not an S3 JSONL file this "
            "CLI can peek at: pass --format chat or --format promptCompletion",
            2,
        )
    head = s3.read(client, uri, "the training data's first row", byte_range=f"bytes=0-{FIRST_ROW_BYTES - 1}")
    line = next((raw for raw in head.splitlines() if raw.strip()), b"")
    try:
        row = json.loads(line)
    except ValueError as e:
        raise CliError(f"cannot read the first row of {uri} ({e}): pass --format", 2) from e
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        return "chat"
    if isinstance(row, dict) and "prompt" in row and "completion" in row:
        return "promptCompletion"
    raise CliError(f"cannot tell the format of {uri} from its first row: pass --format", 2)


class _Runtime:
    """The trainer's own prompt formatting and ONNX Runtime GenAI generation, imported lazily."""

    def __init__(self) -> None:
        from kubetune_trainer import generation
        from kubetune_trainer.data import formats
        from kubetune_trainer.errors import TrainerError

        self.generation, self.formats, self.error = generation, formats, TrainerError

    def tokenizer(self, model_dir: Path) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(model_dir))

    def prompt_text(self, dataset: DatasetSpec, fmt: str, tokenizer: Any, prompt: str) -> str:
        try:
            if fmt == "promptCompletion":
                return prompt
            if fmt == "chat":
                messages = _json(prompt, list) or [{"role": "user", "content": prompt}]
                row = {"messages": [*messages, {"role": "assistant", "content": ""}]}
                return str(self.formats.chat_prompt(tokenizer, row, 1)[0])
            template, answer = dataset.template, dataset.answer_field
            assert template is not None and answer is not None  # format text has a template
            fields = _fields_before(template, answer)
            if not fields:
                # Nothing to fill before the answer (a plain `text` field): the model continues the prompt.
                return str(self.formats.split_prompt(template, answer, {answer: ""}, 1)[0]) + prompt
            row = _text_row(template, fields, answer, prompt)
            return str(self.formats.split_prompt(template, answer, row, 1)[0])
        except self.error as e:
            raise CliError(f"cannot format the prompt: {e.message}", 2) from e

    def answer(
        self, model_dir: Path, tokenizer: Any, text: str, max_new_tokens: int, adapter_file: Path | None
    ) -> str:
        g = self.generation
        ids = g.encode(tokenizer, text)
        model = g.ort_model(model_dir)
        tokens = g.ort_greedy(model, [ids], max_new_tokens, g.eos_ids(tokenizer, None), adapter_file)[0]
        return str(tokenizer.decode(tokens, skip_special_tokens=True)).strip()


def _runtime() -> _Runtime:
    try:
        import onnxruntime_genai  # noqa: F401
        import transformers  # noqa: F401

        return _Runtime()
    except ImportError as e:
        raise CliError(f"{INSTALL_HINT} ({e})", EXIT_FAILED) from e


def _json(text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, kind) else None


def _fields_before(template: str, answer: str) -> list[str]:
    before: list[str] = []
    for field in template_fields(template):
        if field == answer:
            break
        if field not in before:
            before.append(field)
    return before


def _text_row(template: str, fields: list[str], answer: str, prompt: str) -> dict[str, Any]:
    """A row for the text template: the prompt fills its one input field before the answer, or is a
    JSON object of those fields."""
    row = _json(prompt, dict)
    if row is None:
        if len(fields) > 1:
            example = json.dumps(dict.fromkeys(fields, "..."))
            raise CliError(
                f"the text template {template!r} has fields {', '.join(fields)} before {{{answer}}}: pass "
                f"the prompt as a JSON object, e.g. '{example}'",
                2,
            )
        row = {fields[0]: prompt}
    return {**row, answer: ""}


def register(app: typer.Typer) -> None:
    """Adds `pull` and `generate`."""
    app.command()(pull)
    app.command()(generate)
