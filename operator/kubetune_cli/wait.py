"""`--wait`: follow a FineTuneJob (or a FineTuneSweep) to its end with a live progress bar; the exit
code is the outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from kubetune_api import Phase
from kubetune_cli.kube import EXIT_FAILED, EXIT_TIMEOUT, CliError
from kubetune_cli.views import status_of


@dataclass(frozen=True)
class Snapshot:
    """What the bar shows of one reading of the object, and whether it has ended."""

    phase: str
    completed: int
    total: int | None
    description: str
    ended: bool
    failure: str | None = None  # set when it ended badly: the reason, for the error line


def job_snapshot(obj: dict[str, Any]) -> Snapshot:
    """A FineTuneJob's phase, step, loss, live eval metrics and ETA, from its status alone."""
    status = status_of(obj)
    phase = status.phase.value if status.phase else "Pending"
    p = status.progress
    parts = [phase]
    if p is not None:
        if p.loss is not None:
            parts.append(f"loss {p.loss:.4g}")
        parts += [f"{k} {v:.4g}" for k, v in sorted(p.metrics.items())]
        if p.estimated_remaining_seconds is not None and status.phase == Phase.TRAINING:
            parts.append(f"ETA {_duration(p.estimated_remaining_seconds)}")
    failed = status.phase == Phase.FAILED
    return Snapshot(
        phase=phase,
        completed=(p.step or 0) if p else 0,
        total=(p.total_steps or None) if p else None,
        description=" · ".join(parts),
        ended=status.phase in (Phase.SUCCEEDED, Phase.FAILED),
        failure=(status.message or "see kubetune describe") if failed else None,
    )


def follow(
    read: Callable[[], dict[str, Any]],
    snapshot: Callable[[dict[str, Any]], Snapshot],
    timeout: float,
    console: Console,
    interval: float = 2.0,
) -> dict[str, Any]:
    """Poll until the object ends: returned when it succeeded, CliError exit 1 when it failed, exit 4
    when `timeout` seconds passed first. Without a terminal, each new phase is printed on its own line."""
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    last_phase = None
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("Pending", total=None)
        while True:
            obj = read()
            now = snapshot(obj)
            bar.update(task, completed=now.completed, total=now.total, description=now.description)
            if now.phase != last_phase and not console.is_terminal:
                console.print(f"phase: {now.phase}")
            last_phase = now.phase
            if now.ended:
                break
            if time.monotonic() > deadline:
                raise CliError(f"still {last_phase} after {timeout:g}s (--timeout)", EXIT_TIMEOUT)
            time.sleep(interval)
    if now.failure is not None:
        raise CliError(f"Failed: {now.failure}", EXIT_FAILED)
    return obj


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
