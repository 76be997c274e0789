"""`--wait`: follow a FineTuneJob to a terminal phase with a live progress bar (step, loss, eval
metrics, ETA); the exit code is the outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from kubetune_api import FineTuneJobStatus, Phase
from kubetune_cli.kube import EXIT_FAILED, EXIT_TIMEOUT, CliError
from kubetune_cli.views import status_of

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)


def progress_fields(status: FineTuneJobStatus) -> dict[str, Any]:
    """The bar's numbers and its one line of text, from the status alone."""
    p = status.progress
    parts = [status.phase.value if status.phase else "Pending"]
    if p is not None:
        if p.loss is not None:
            parts.append(f"loss {p.loss:.4g}")
        parts += [f"{k} {v:.4g}" for k, v in sorted(p.metrics.items())]
        if p.estimated_remaining_seconds is not None and status.phase == Phase.TRAINING:
            parts.append(f"ETA {_duration(p.estimated_remaining_seconds)}")
    return {
        "completed": (p.step or 0) if p else 0,
        "total": (p.total_steps or None) if p else None,
        "description": " · ".join(parts),
    }


def follow(
    read: Callable[[], dict[str, Any]], timeout: float, console: Console, interval: float = 2.0
) -> FineTuneJobStatus:
    """Poll until Succeeded (returned) or Failed (CliError, exit 1); CliError exit 4 on timeout."""
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    last_phase = None
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("Pending", total=None)
        while True:
            status = status_of(read())
            bar.update(task, **progress_fields(status))
            if status.phase != last_phase and not console.is_terminal:
                console.print(f"phase: {status.phase.value if status.phase else 'Pending'}")
            last_phase = status.phase
            if status.phase in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise CliError(
                    f"still {last_phase or 'Pending'} after {timeout:g}s (--timeout)", EXIT_TIMEOUT
                )
            time.sleep(interval)
    if status.phase == Phase.FAILED:
        raise CliError(f"Failed: {status.message or 'see kubetune describe'}", EXIT_FAILED)
    return status


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
