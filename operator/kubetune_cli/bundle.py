"""A run's exported bundle as the CLI fetches it: the manifest that status.artifacts names, checked
against the sha256 the status records, and its files downloaded and verified one by one.

The local layout is the one `kubetune-bundle verify --download DIR` writes: DIR mirrors the storage below
the deepest folder holding the manifest and every artifact (DIR/adapter/..., DIR/onnx/<target>/...,
DIR/manifest.json). manifest.json is written last, so a folder with it holds every file it lists
(of the artifacts pulled), each verified."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kubetune_api import ArtifactKind, FineTuneJob, describe_errors
from kubetune_api import manifest as manifest_model
from kubetune_api.layout import MANIFEST_FILE
from kubetune_api.manifest import ArtifactRecord, FileRecord, Manifest, local_folders, local_manifest_path
from kubetune_cli import s3
from kubetune_cli.kube import EXIT_API, EXIT_ARTIFACTS, CliError, Kube


@dataclass(frozen=True)
class Bundle:
    """The current run's manifest, verified against the status, and where its files go locally."""

    job: FineTuneJob
    manifest: Manifest
    raw: bytes
    uri: str

    def local_folders(self) -> list[PurePosixPath]:
        """Each artifact's folder in the local layout (kubetune_api.manifest, as kubetune-bundle)."""
        return local_folders(self.manifest, self.uri)

    def manifest_path(self) -> PurePosixPath:
        return local_manifest_path(self.manifest, self.uri)

    def select(
        self, kinds: Iterable[str] = (), target: str | None = None
    ) -> list[tuple[ArtifactRecord, PurePosixPath]]:
        """The artifacts of the given kinds (all without) and target; none matching is an error that
        lists what the bundle holds."""
        wanted = set(kinds)
        picked = [
            (a, folder)
            for a, folder in zip(self.manifest.artifacts, self.local_folders(), strict=True)
            if (not wanted or a.kind.value in wanted) and (target is None or a.target == target)
        ]
        if not picked:
            asked = " ".join(
                p
                for p in (
                    f"kind {'/'.join(sorted(wanted))}" if wanted else "",
                    f"target {target}" if target else "",
                )
                if p
            )
            raise CliError(
                f"the bundle of {self.job.metadata.name} has no artifact of {asked}; "
                f"it holds: {self.describe()}",
                EXIT_ARTIFACTS,
            )
        return picked

    def describe(self) -> str:
        return ", ".join(
            f"{a.kind.value}{'/' + a.target if a.target else ''}" for a in self.manifest.artifacts
        )


def open_bundle(cluster: Kube, name: str, credentials_from_secret: bool) -> tuple[Any, Bundle]:
    """An S3 client for the job's output store and its current run's verified manifest."""
    obj = cluster.get_job(name)
    try:
        job = FineTuneJob.from_k8s(obj)
    except ValidationError as e:
        raise CliError(
            f"FineTuneJob {cluster.namespace}/{name} does not parse: {describe_errors(e)}", EXIT_API
        ) from e
    status = job.status
    manifest_artifact = next((a for a in status.artifacts if a.kind == ArtifactKind.MANIFEST), None)
    if manifest_artifact is None:
        phase = status.phase.value if status.phase else "Pending"
        detail = f": {status.message}" if status.message else ""
        why = (
            "export is disabled (spec.export.enabled: false), so there is no manifest to pull"
            if not job.spec.export.enabled
            else "the export has not written a manifest yet"
        )
        raise CliError(
            f"FineTuneJob {cluster.namespace}/{name} has no exported artifacts: {why} "
            f"(phase {phase}{detail})",
            EXIT_ARTIFACTS,
        )
    if manifest_artifact.sha256 is None:
        raise CliError(
            f"status.artifacts of {name} records no sha256 for {manifest_artifact.uri}; cannot verify it",
            EXIT_ARTIFACTS,
        )
    credentials = s3.secret_credentials(cluster, job.spec.output) if credentials_from_secret else None
    client = s3.client(job.spec.output, credentials)
    raw = s3.read(client, manifest_artifact.uri, MANIFEST_FILE)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != manifest_artifact.sha256:
        raise CliError(
            f"{MANIFEST_FILE}: sha256 {actual} does not match {manifest_artifact.sha256} that the "
            f"FineTuneJob's status records ({manifest_artifact.uri})",
            EXIT_ARTIFACTS,
        )
    manifest = parse_manifest(raw, manifest_artifact.uri)
    if status.run_id and manifest.run_id != status.run_id:
        raise CliError(
            f"{manifest_artifact.uri} is of run {manifest.run_id}, the job's status of run {status.run_id}",
            EXIT_ARTIFACTS,
        )
    return client, Bundle(job, manifest, raw, manifest_artifact.uri)


def parse_manifest(raw: bytes, uri: str) -> Manifest:
    try:
        return manifest_model.parse_manifest(raw, uri, reader="this CLI")
    except manifest_model.ManifestError as e:
        raise CliError(str(e), EXIT_ARTIFACTS) from e


def fetch(
    client: Any,
    bundle: Bundle,
    picked: list[tuple[ArtifactRecord, PurePosixPath]],
    dest: Path,
    console: Console,
) -> list[Path]:
    """Every file of the picked artifacts into `dest` (those already there and verified are kept),
    then the manifest; returns each artifact's local folder."""
    files: list[tuple[FileRecord, Path]] = []
    for artifact, folder in picked:
        for record in artifact.files:
            relative = folder / record.path
            if ".." in relative.parts or relative.is_absolute():
                raise CliError(f"{bundle.uri}: {record.uri} has a path outside its folder", EXIT_ARTIFACTS)
            files.append((record, dest.joinpath(*relative.parts)))
    # A stale manifest would vouch for files this pull has not checked yet.
    manifest_dest = dest.joinpath(*bundle.manifest_path().parts)
    manifest_dest.unlink(missing_ok=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("pulling", total=sum(r.size for r, _ in files))
        for record, path in files:
            if s3.already_verified(path, record):
                progress.advance(task, record.size)
                continue
            progress.update(task, description=record.path)
            s3.download(client, record, path, lambda n: progress.advance(task, n))
        progress.update(task, description="verified")
    write_atomically(manifest_dest, bundle.raw)
    return [dest.joinpath(*folder.parts) for _, folder in picked]


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + s3.PARTIAL_SUFFIX)
    partial.write_bytes(data)
    os.replace(partial, path)
