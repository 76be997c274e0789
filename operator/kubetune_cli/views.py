"""What `kubetune get` and `kubetune describe` print: rich tables from the API's own status models."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kubetune_api import FineTuneJobStatus

PHASE_STYLES = {
    "Succeeded": "green",
    "Failed": "red",
    "Training": "cyan",
    "Exporting": "cyan",
    "Queued": "yellow",
}


def status_of(obj: dict[str, Any]) -> FineTuneJobStatus:
    """The object's status as the API model (an unreadable status shows as empty, never crashes)."""
    try:
        return FineTuneJobStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        return FineTuneJobStatus()


def age(timestamp: Any, now: dt.datetime | None = None) -> str:
    """kubectl's short age: 45s, 12m, 3h, 2d."""
    if not timestamp:
        return "-"
    when = timestamp if isinstance(timestamp, dt.datetime) else dt.datetime.fromisoformat(str(timestamp))
    seconds = int(((now or dt.datetime.now(dt.UTC)) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def phase_text(phase: str | None) -> Text:
    return Text(phase or "-", style=PHASE_STYLES.get(phase or "", ""))


def jobs_table(items: list[dict[str, Any]], all_namespaces: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAMESPACE"] if all_namespaces else []
    for column in [*columns, "NAME", "PHASE", "METHOD", "PROGRESS", "LOSS", "EVAL LOSS", "AGE"]:
        table.add_column(column)
    for obj in sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        status = status_of(obj)
        progress = status.progress
        cells = [obj["metadata"].get("namespace", "")] if all_namespaces else []
        table.add_row(
            *cells,
            obj["metadata"]["name"],
            phase_text(status.phase),
            str(obj.get("spec", {}).get("method", "lora")),
            _progress(progress.step, progress.total_steps) if progress else "-",
            _number(progress.loss if progress else None),
            _number(progress.eval_loss if progress else None),
            age(obj["metadata"].get("creationTimestamp")),
        )
    return table


def describe(obj: dict[str, Any], events: list[Any]) -> RenderableType:
    """Everything a user asks about one FineTuneJob, in the order they ask it."""
    meta, spec, status = obj["metadata"], obj.get("spec", {}), status_of(obj)
    summary = _pairs(
        [
            ("Name", f"{meta.get('namespace')}/{meta['name']}"),
            ("Phase", phase_text(status.phase)),
            ("Message", status.message),
            ("Method", spec.get("method", "lora")),
            ("Base model", spec.get("baseModel", {}).get("uri")),
            ("Train data", spec.get("dataset", {}).get("trainUri")),
            ("Output", spec.get("output", {}).get("uri")),
            ("Run id", status.run_id),
            ("Jobs", ", ".join(n for n in (status.trainer_job_name, status.export_job_name) if n) or None),
            ("Created", f"{meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'))} ago)"),
            ("Preemptions", status.preemptions),
        ]
    )
    parts: list[RenderableType] = [summary]
    if status.progress is not None:
        p = status.progress
        parts += [
            _heading("Progress"),
            _pairs(
                [
                    ("Step", _progress(p.step, p.total_steps)),
                    ("Epoch", _number(p.epoch)),
                    ("Loss", _number(p.loss)),
                    ("Eval loss", _number(p.eval_loss)),
                    ("Learning rate", f"{p.learning_rate:.3g}" if p.learning_rate is not None else None),
                    ("Tokens/s", _number(p.tokens_per_second)),
                    (
                        "ETA",
                        f"{p.estimated_remaining_seconds}s"
                        if p.estimated_remaining_seconds is not None
                        else None,
                    ),
                    *[(f"Eval {k}", _number(v)) for k, v in sorted(p.metrics.items())],
                ]
            ),
        ]
    if status.plan is not None:
        from kubetune_cli.plan import plan_view  # plan.py renders the plan for `kubetune plan` too

        parts += [_heading("Plan (dry run)"), plan_view(status.plan)]
    if status.metrics:
        parts += [_heading("Metrics"), _pairs([(k, _number(v)) for k, v in sorted(status.metrics.items())])]
    if status.last_checkpoint is not None:
        checkpoint = status.last_checkpoint
        rows = [("Step", checkpoint.step), ("URI", checkpoint.uri), ("Time", checkpoint.time)]
        parts += [_heading("Last checkpoint"), _pairs(rows)]
    if status.artifacts:
        table = _table("KIND", "TARGET", "SIZE", "URI")
        for a in status.artifacts:
            table.add_row(a.kind.value, a.target or "", _size(a.size_bytes), a.uri)
        parts += [_heading("Artifacts"), table]
    if status.export_targets:
        table = _table("TARGET", "GATE", "METRICS")
        for t in status.export_targets:
            shown = ", ".join(f"{k}={_number(v)}" for k, v in sorted(t.metrics.items()))
            table.add_row(t.name, t.gate.value, shown)
        parts += [_heading("Export targets"), table]
    if status.conditions:
        table = _table("TYPE", "STATUS", "REASON", "AGE", "MESSAGE")
        for c in status.conditions:
            table.add_row(
                c.type, c.status.value, c.reason or "", age(c.last_transition_time), c.message or ""
            )
        parts += [_heading("Conditions"), table]
    table = _table("TYPE", "REASON", "AGE", "MESSAGE")
    for e in sorted(events, key=_event_time):
        style = "yellow" if e.type == "Warning" else ""
        table.add_row(Text(e.type or "", style=style), e.reason or "", age(_event_time(e)), e.message or "")
    parts += [_heading("Events"), table if events else Text("  <none>")]
    return Group(*parts)


def _event_time(event: Any) -> dt.datetime:
    for when in (event.last_timestamp, event.event_time, event.first_timestamp):
        if when is not None:
            return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime.min.replace(tzinfo=dt.UTC)


def _heading(text: str) -> Text:
    return Text(f"\n{text}:", style="bold")


def _pairs(rows: list[tuple[str, Any]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        if value is not None and value != "":
            table.add_row(f"  {key}:", value if isinstance(value, Text) else str(value))
    return table


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(("  " if i == 0 else "") + column, overflow="fold")
    return table


def _progress(step: int | None, total: int | None) -> str:
    if step is None:
        return "-"
    if not total:
        return str(step)
    return f"{step}/{total} ({100 * step // total}%)"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _size(size: int | None) -> str:
    if size is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)
