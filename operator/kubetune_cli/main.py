"""The `kubetune` command: an ML engineer's front door to FineTuneJobs.

kubetune finetune -m s3://models/base/ -d s3://data/train.jsonl --output s3://runs/ --wait
kubetune get | describe NAME | logs NAME -f | pull NAME DIR | generate NAME "prompt"
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from kubetune_cli import artifacts, logs, plan, sweep
from kubetune_cli.job_flags import FinetuneFlags, FlagError, finetunejob
from kubetune_cli.kube import CliError, Kube, Target
from kubetune_cli.views import describe as describe_view
from kubetune_cli.views import jobs_table, status_of
from kubetune_cli.wait import follow, job_snapshot

app = typer.Typer(
    name="kubetune",
    help="Fine-tune language models on Kubernetes: FineTuneJobs from flags, their progress, logs and "
    "artifacts. Flags take Olive's names where they exist (olive finetune -> kubetune finetune).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
# Errors are never wrapped: a message read in a log or by a script stays one line per problem.
errors = Console(stderr=True, soft_wrap=True)


@app.callback()
def connection(
    ctx: typer.Context,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Path to the kubeconfig file.", envvar="KUBECONFIG")
    ] = None,
    context: Annotated[str | None, typer.Option(help="The kubeconfig context to use.")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace; default: the context's.")
    ] = None,
) -> None:
    """kubectl's connection flags, for every command."""
    # KUBECONFIG may list several files; the client reads the first, as most tools do.
    first = kubeconfig.split(":")[0] if kubeconfig else None
    ctx.obj = Target(kubeconfig=first, context=context, namespace=namespace)


def kube(ctx: typer.Context, all_namespaces: bool = False) -> Kube:
    target: Target = ctx.obj
    if all_namespaces:
        target = Target(target.kubeconfig, target.context, target.namespace, all_namespaces=True)
    return Kube(target)


def complete_job_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of FineTuneJob names in the namespace the command line names."""
    params = ctx.parent.params if ctx.parent else {}
    try:
        found = Kube(Target(params.get("kubeconfig"), params.get("context"), params.get("namespace")))
        return [
            o["metadata"]["name"] for o in found.list_jobs() if o["metadata"]["name"].startswith(incomplete)
        ]
    except Exception:  # completion must never print a traceback into the shell
        return []


JobName = Annotated[str, typer.Argument(help="The FineTuneJob.", autocompletion=complete_job_names)]
DATA, TRAIN, LORA, RUN, EXPORT, S3 = (
    "Model and data",
    "Training",
    "LoRA",
    "Resources",
    "Export",
    "Output (S3)",
)


@app.command(no_args_is_help=True)
def finetune(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "-m",
            "--model",
            "--model_name_or_path",
            help="Base model: S3 prefix of an HF folder, an S3 .gguf, pvc:// or a path in the image.",
            rich_help_panel=DATA,
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            "-d",
            "--data",
            "--data_files",
            help="Training data (JSONL, JSON, CSV, Parquet), s3://...",
            rich_help_panel=DATA,
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "--output-path",
            "--output_path",
            help="S3 prefix for checkpoints and artifacts.",
            rich_help_panel=S3,
        ),
    ],
    name: Annotated[str | None, typer.Option(help="FineTuneJob name; default: finetune-<random>.")] = None,
    method: Annotated[str, typer.Option(help="lora, qlora or full.", rich_help_panel=TRAIN)] = "lora",
    eval_data: Annotated[
        str | None, typer.Option("--eval-data", "--eval_data", help="Held-out data.", rich_help_panel=DATA)
    ] = None,
    eval_ratio: Annotated[
        float | None,
        typer.Option("--eval-ratio", help="Hold out this share of the training rows.", rich_help_panel=DATA),
    ] = None,
    text_template: Annotated[
        str | None,
        typer.Option(
            "--text-template",
            "--text_template",
            help='Row template, e.g. "Q: {question}\\nA: {answer}".',
            rich_help_panel=DATA,
        ),
    ] = None,
    use_chat_template: Annotated[
        bool,
        typer.Option(
            "--use-chat-template",
            "--use_chat_template",
            help="Rows are chat messages (loss on the assistant turns).",
            rich_help_panel=DATA,
        ),
    ] = False,
    data_format: Annotated[
        str | None,
        typer.Option("--format", help="auto, text, chat or promptCompletion.", rich_help_panel=DATA),
    ] = None,
    max_samples: Annotated[
        int | None, typer.Option("--max-samples", "--max_samples", rich_help_panel=DATA)
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", "--max_steps", rich_help_panel=TRAIN)
    ] = None,
    epochs: Annotated[
        float | None, typer.Option("--epochs", "--num_train_epochs", rich_help_panel=TRAIN)
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", "--learning_rate", rich_help_panel=TRAIN)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "--per_device_train_batch_size", rich_help_panel=TRAIN)
    ] = None,
    gradient_accumulation_steps: Annotated[
        int | None,
        typer.Option("--gradient-accumulation-steps", "--gradient_accumulation_steps", rich_help_panel=TRAIN),
    ] = None,
    max_seq_len: Annotated[
        int | None, typer.Option("--max-seq-len", "--max_seq_len", rich_help_panel=TRAIN)
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            "--torch_dtype",
            help="auto, fp32, bf16, fp16 (or Olive's float32, bfloat16, float16).",
            rich_help_panel=TRAIN,
        ),
    ] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", "--lora_r", rich_help_panel=LORA)] = None,
    lora_alpha: Annotated[
        int | None, typer.Option("--lora-alpha", "--lora_alpha", rich_help_panel=LORA)
    ] = None,
    lora_dropout: Annotated[
        float | None, typer.Option("--lora-dropout", "--lora_dropout", rich_help_panel=LORA)
    ] = None,
    target_modules: Annotated[
        str | None,
        typer.Option(
            "--target-modules",
            "--target_modules",
            help="Comma-separated, e.g. q_proj,v_proj.",
            rich_help_panel=LORA,
        ),
    ] = None,
    gpus: Annotated[
        int | None, typer.Option(help="GPUs per trainer pod; 0 trains on CPU.", rich_help_panel=RUN)
    ] = None,
    nodes: Annotated[
        int | None, typer.Option(help="Trainer pods (multi-node data parallel).", rich_help_panel=RUN)
    ] = None,
    cpu: Annotated[str | None, typer.Option(help="CPU per pod, e.g. 8.", rich_help_panel=RUN)] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory per pod, e.g. 64Gi.", rich_help_panel=RUN)
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Kueue LocalQueue.", rich_help_panel=RUN)] = None,
    export_target: Annotated[
        list[str] | None,
        typer.Option(
            "--export-target", help="PRECISION[:PROVIDER], repeatable, e.g. int4:cpu.", rich_help_panel=EXPORT
        ),
    ] = None,
    no_export: Annotated[
        bool, typer.Option("--no-export", help="Train only.", rich_help_panel=EXPORT)
    ] = False,
    adapter: Annotated[
        bool, typer.Option("--adapter", help="Also a swappable .onnx_adapter.", rich_help_panel=EXPORT)
    ] = False,
    endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL.", rich_help_panel=S3)] = None,
    region: Annotated[str | None, typer.Option(help="S3 region.", rich_help_panel=S3)] = None,
    force_path_style: Annotated[bool, typer.Option("--force-path-style", rich_help_panel=S3)] = False,
    credentials_secret: Annotated[
        str | None,
        typer.Option(
            "--credentials-secret",
            help="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.",
            rich_help_panel=S3,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any spec field by path, e.g. training.warmupRatio=0.1 (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="spec.dryRun: plan on CPU, bind no GPU.")
    ] = False,
    print_format: Annotated[
        str | None,
        typer.Option("-o", "--print", help="yaml or json: print the FineTuneJob, do not create it."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it to Succeeded or Failed; the exit code says which.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 24 * 3600,
) -> str | None:
    """Create a FineTuneJob from flags ([bold]olive finetune[/bold]'s flag names work too)."""
    if use_chat_template and data_format not in (None, "chat"):
        raise CliError("--use-chat-template means --format chat", 2)
    flags = FinetuneFlags(
        model=model,
        data=data,
        output=output,
        name=name,
        method=method,
        eval_data=eval_data,
        eval_ratio=eval_ratio,
        text_template=text_template,
        data_format="chat" if use_chat_template else data_format,
        max_samples=max_samples,
        max_steps=max_steps,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_seq_length=max_seq_len,
        precision=precision,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=tuple(m.strip() for m in (target_modules or "").split(",") if m.strip()),
        gpus=gpus,
        nodes=nodes,
        cpu=cpu,
        memory=memory,
        queue=queue,
        export_targets=tuple(export_target or ()),
        no_export=no_export,
        adapter=adapter,
        endpoint=endpoint,
        region=region,
        force_path_style=force_path_style,
        credentials_secret=credentials_secret,
        dry_run=dry_run,
        settings=tuple(set_ or ()),
    )
    try:
        body = finetunejob(flags)
    except FlagError as e:
        raise CliError(f"invalid FineTuneJob: {e}", 2) from e
    if print_format:
        print_object(body, print_format)
        return None
    cluster = kube(ctx)
    created = cluster.create_job(body)
    job = created["metadata"]["name"]
    console.print(f"finetunejob.kubetune.dev/{job} created in {cluster.namespace}")
    if wait:
        status = status_of(follow(lambda: cluster.get_job(job), job_snapshot, timeout, console))
        console.print(f"{job}: {status.phase.value if status.phase else ''} {status.message or ''}".rstrip())
    return str(job)


def print_object(body: dict[str, Any], fmt: str) -> None:
    if fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
    elif fmt == "json":
        import json

        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        raise CliError(f"-o {fmt}: expected yaml or json", 2)


@app.command()
def get(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="One FineTuneJob; default: all.", autocompletion=complete_job_names)
    ] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")] = False,
    print_format: Annotated[str | None, typer.Option("-o", "--output", help="yaml or json.")] = None,
) -> None:
    """List FineTuneJobs: phase, progress, loss, age."""
    cluster = kube(ctx, all_namespaces)
    items = [cluster.get_job(name)] if name else cluster.list_jobs()
    if print_format:
        print_object(items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, print_format)
        return
    if not items:
        errors.print(f"No FineTuneJobs found in {'any namespace' if all_namespaces else cluster.namespace}.")
        return
    console.print(jobs_table(items, all_namespaces))


@app.command()
def describe(ctx: typer.Context, name: JobName) -> None:
    """Phase, progress, metrics, checkpoints, artifacts, conditions and Events of one FineTuneJob."""
    cluster = kube(ctx)
    obj = cluster.get_job(name)
    selector = f"involvedObject.name={name},involvedObject.kind=FineTuneJob"
    events = cluster.call(
        lambda: cluster.core.list_namespaced_event(cluster.namespace, field_selector=selector).items,
        f"Events of {name}",
    )
    console.print(describe_view(obj, events))


logs.register(app)
artifacts.register(app)
plan.register(app)
sweep.register(app)


def main() -> None:
    """The console script: a CliError is one line on stderr and its exit code, never a traceback."""
    try:
        app(standalone_mode=False)
    except CliError as e:
        errors.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        errors.print("aborted")
        sys.exit(130)
    except Exception as e:
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
