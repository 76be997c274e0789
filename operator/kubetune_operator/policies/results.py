"""Final results: status.metrics and status.artifacts come from the JSON document each successful
trainer or export pod leaves as its termination message. The operator is their only writer (the
trainer's live metrics go to status.progress.metrics), and needs no S3 access to fill them.

The document always fits the kubelet's 4 KiB. When something had to be left out of it, it says so:
`truncated` names what was dropped (`metrics.<name>`, `artifacts.sizeBytes`, `artifacts.sha256`) and
`resultUri` is the full record in S3. The status then lists that record as an artifact (kind
`metrics`, unless an artifact has that URI already), and `truncation_notes` words it for a condition
or an Event."""

from __future__ import annotations

from typing import Any

from kubetune_api import Artifact, ArtifactKind
from kubetune_api.v1alpha1 import ExportTargetStatus
from kubetune_operator.observation import ChildJob


def export_targets(exporter: ChildJob | None) -> list[ExportTargetStatus]:
    """Each export target's figures and gate verdict, from the succeeded export Job's document."""
    if exporter is None or not exporter.done or exporter.failed_reason:
        return []
    items = _document(exporter).get("targets")
    out = []
    for item in items if isinstance(items, list) else []:
        try:
            out.append(ExportTargetStatus.model_validate(item))
        except ValueError:
            continue  # a target we cannot describe is still in the manifest in S3
    return out


def collect(*jobs: ChildJob | None) -> tuple[dict[str, float], list[Artifact]]:
    """Metrics and artifacts of the succeeded Jobs, in stage order; a later stage's value wins."""
    metrics: dict[str, float] = {}
    artifacts: dict[tuple[str, str], Artifact] = {}
    for job in _succeeded(jobs):
        metrics.update(job_metrics(job))
        # One entry per (kind, uri): the exporter lists the trainer's adapter again.
        artifacts.update({(a.kind, a.uri): a for a in job_artifacts(job)})
    for job in _succeeded(jobs):
        full = full_result(job)
        if full is not None and all(a.uri != full.uri for a in artifacts.values()):
            artifacts[(full.kind, full.uri)] = full
    return metrics, list(artifacts.values())


def _succeeded(jobs: tuple[ChildJob | None, ...]) -> list[ChildJob]:
    return [job for job in jobs if job is not None and job.done and not job.failed_reason]


def _document(job: ChildJob) -> dict[str, Any]:
    outcome = job.result_outcome()
    return outcome.result() if outcome else {}


def job_metrics(job: ChildJob) -> dict[str, float]:
    raw = _document(job).get("metrics")
    if not isinstance(raw, dict):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def job_artifacts(job: ChildJob) -> list[Artifact]:
    items = _document(job).get("artifacts")
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        try:
            out.append(Artifact.model_validate(item))
        except ValueError:
            continue  # an artifact we cannot describe is still in the manifest in S3
    return out


def truncated(job: ChildJob) -> tuple[list[str], str | None]:
    """What the job's result document left out, and where the full record is (None if nothing was)."""
    document = _document(job)
    dropped = document.get("truncated")
    uri = document.get("resultUri")
    if not isinstance(dropped, list) or not dropped:
        return [], None
    return [str(d) for d in dropped], uri if isinstance(uri, str) and uri.startswith("s3://") else None


def full_result(job: ChildJob) -> Artifact | None:
    """The full record in S3 of a result document that had to leave something out, as an artifact."""
    _, uri = truncated(job)
    if uri is None:
        return None
    try:
        return Artifact(kind=ArtifactKind.METRICS, uri=uri)
    except ValueError:
        return None


def truncation_notes(*jobs: ChildJob | None) -> list[str]:
    """One sentence per succeeded Job whose result document left something out."""
    notes = []
    for job in _succeeded(jobs):
        dropped, uri = truncated(job)
        if dropped:
            where = f"; the full result is at {uri}" if uri else ""
            notes.append(f"{job.name}'s result left out {', '.join(dropped)} to fit 4 KiB{where}")
    return notes
