"""`kubetune plan`: `kubetune finetune`'s flags as a dry run (spec.dryRun): a small CPU pod reads the data
and the model's config, and this prints what it found; exit 1 when it found an error."""

from __future__ import annotations

import inspect
from typing import Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kubetune_api.plan import PlanSeverity, PlanStatus
from kubetune_cli.kube import CliError


def plan_view(plan: PlanStatus) -> RenderableType:
    """The plan as a user reads it: examples, lengths, labels, modules, parameters, memory, problems."""
    facts = Table(box=None, show_header=False, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    rows: list[tuple[str, Any]] = [
        ("Data format", plan.format),
        ("Base model", plan.base_format),
        ("Training rows", plan.rows),
        ("Steps per epoch", plan.steps_per_epoch),
        ("Total steps", plan.total_steps),
    ]
    if plan.tokens is not None:
        t = plan.tokens
        rows += [
            ("Tokens per row", f"min {t.min} · mean {t.mean:.1f} · p50 {t.p50} · p95 {t.p95} · max {t.max}"),
            ("Truncated rows", f"{t.truncated_rows} of {t.rows_measured} at maxSeqLength {t.max_seq_length}"),
        ]
    if plan.labels is not None:
        lab = plan.labels
        rows.append(
            (
                "Labels",
                f"{lab.scope}: {lab.labeled_share:.1%} of tokens; {lab.rows_without_labels} rows without",
            )
        )
    if plan.trainable_parameters is not None:
        total = f" of {plan.total_parameters:,}" if plan.total_parameters else ""
        rows.append(("Trainable parameters", f"{plan.trainable_parameters:,}{total}"))
    if plan.target_modules:
        rows.append(("Target modules", ", ".join(plan.target_modules)))
    if plan.linear_modules:
        rows.append(("Linear modules", ", ".join(plan.linear_modules)))
    for key, value in rows:
        if value is not None:
            facts.add_row(f"{key}:", str(value))
    parts: list[RenderableType] = [facts]
    if plan.examples:
        parts.append(Text("\nFirst rows, as the trainer renders them:", style="bold"))
        parts += [Text(f"  {example!r}") for example in plan.examples]
    if plan.memory:
        memory = Table(
            box=None, pad_edge=False, header_style="bold", title="\nPeak memory per device (estimate)"
        )
        for column in (
            "METHOD",
            "PRECISION",
            "BATCH",
            "CHECKPOINTING",
            "TOTAL",
            "WEIGHTS",
            "OPTIMIZER",
            "ACTIVATIONS",
            "LOGITS",
        ):
            memory.add_column(column)
        for m in plan.memory:
            memory.add_row(
                m.method + (" (spec)" if m.spec else ""),
                m.precision,
                str(m.batch_size),
                "on" if m.gradient_checkpointing else "off",
                _gib(m.total_mib),
                _gib(m.weights_mib),
                _gib(m.trainable_state_mib),
                _gib(m.activations_mib),
                _gib(m.logits_mib),
            )
        parts.append(memory)
    for problem in plan.problems:
        style = "red" if problem.severity == PlanSeverity.ERROR else "yellow"
        parts.append(Text(f"{problem.severity.value} {problem.reason}: {problem.message}", style=style))
    if plan.truncated:
        parts.append(Text(f"(left out to fit: {', '.join(plan.truncated)})"))
    return Group(*parts)


def _gib(mib: int) -> str:
    return f"{mib / 1024:.2f} GiB"


def register(app: typer.Typer) -> None:
    from kubetune_cli.main import finetune

    def plan(ctx: typer.Context, **flags: Any) -> None:
        """Dry-run a FineTuneJob on CPU: data, template, truncation, labels, modules, memory (no GPU)."""
        from kubetune_cli.main import console, kube
        from kubetune_cli.views import status_of
        from kubetune_cli.wait import follow, job_snapshot

        name = finetune(ctx, dry_run=True, wait=False, **flags)
        if name is None:  # -o yaml: printed, not created
            return
        cluster = kube(ctx)
        try:
            follow(lambda: cluster.get_job(name), job_snapshot, flags["timeout"], console)
            failed = None
        except CliError as e:
            if e.exit_code != 1:
                raise
            failed = e
        status = status_of(cluster.get_job(name))
        if status.plan is None:
            raise failed or CliError(f"{name}: the dry run reported no plan ({status.message})", 1)
        console.print(plan_view(status.plan))
        if failed is not None:
            errors = ", ".join(p.reason for p in status.plan.errors) or status.message
            raise CliError(f"the plan found errors: {errors}", 1)

    # The same flags as finetune, less the two that plan always sets.
    # (Resolved here: the annotations are strings naming main's imports.)
    signature = inspect.signature(finetune, eval_str=True)
    kept = [p for name, p in signature.parameters.items() if name not in ("dry_run", "wait")]
    plan.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    plan.__annotations__ = {p.name: p.annotation for p in kept}
    app.command("plan", no_args_is_help=True)(plan)
