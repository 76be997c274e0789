"""Final results: status.metrics and status.artifacts come from the JSON document each successful
trainer or export pod leaves as its termination message. The operator is their only writer (the
trainer's live metrics go to status.progress.metrics), and needs no S3 access to fill them."""

from __future__ import annotations

from kubetune_api import Artifact
from kubetune_operator.observation import ChildJob


def collect(*jobs: ChildJob | None) -> tuple[dict[str, float], list[Artifact]]:
    """Metrics and artifacts of the succeeded Jobs, in stage order; a later stage's value wins."""
    metrics: dict[str, float] = {}
    artifacts: dict[tuple[str, str], Artifact] = {}
    for job in jobs:
        if job is None or not job.done or job.failed_reason:
            continue
        metrics.update(job_metrics(job))
        # One entry per (kind, uri): the exporter lists the trainer's adapter again.
        artifacts.update({(a.kind, a.uri): a for a in job_artifacts(job)})
    return metrics, list(artifacts.values())


def job_metrics(job: ChildJob) -> dict[str, float]:
    outcome = job.result_outcome()
    raw = outcome.result().get("metrics") if outcome else None
    if not isinstance(raw, dict):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def job_artifacts(job: ChildJob) -> list[Artifact]:
    outcome = job.result_outcome()
    items = outcome.result().get("artifacts") if outcome else None
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        try:
            out.append(Artifact.model_validate(item))
        except ValueError:
            continue  # an artifact we cannot describe is still in the manifest in S3
    return out
