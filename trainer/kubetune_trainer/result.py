"""The result document a successful trainer or exporter leaves as its termination message.

The operator reads it from the pod status (no S3 access needed) and copies `metrics` and
`artifacts` into the FineTuneJob's status. It must stay under the kubelet's 4 KiB limit, so it
holds numbers and artifact summaries only; the full record is the manifest in S3.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kubetune_trainer.storage import FileEntry, sha256_file

RESULT_LIMIT = 4096


def folder_artifact(kind: str, uri: str, entries: list[FileEntry]) -> dict[str, Any]:
    """A folder's size, and the sha256 of its file list (path, size, sha256 of every file)."""
    listing = json.dumps(
        [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in sorted(entries, key=lambda e: e.path)],
        sort_keys=True,
        separators=(",", ":"),
    )
    return {
        "kind": kind,
        "uri": uri,
        "sizeBytes": sum(e.size for e in entries),
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }


def file_artifact(kind: str, uri: str, path: Path) -> dict[str, Any]:
    return {"kind": kind, "uri": uri, "sizeBytes": path.stat().st_size, "sha256": sha256_file(path)}


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """Only numbers go to status.metrics (its schema is a map of numbers)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def render(metrics: dict[str, Any], artifacts: list[dict[str, Any]]) -> str:
    """Compact JSON; metrics are dropped (artifacts kept) if the whole would not fit."""
    document = {"metrics": numeric(metrics), "artifacts": artifacts}
    if "weightsSha256" in metrics:
        # Every rank of a distributed run reports it: equal digests show they trained one model.
        document["weightsSha256"] = metrics["weightsSha256"]
    text = json.dumps(document, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > RESULT_LIMIT:
        text = json.dumps({"metrics": {}, "artifacts": artifacts}, separators=(",", ":"), sort_keys=True)
    return text


def render_rank(outcome: dict[str, Any]) -> str:
    """What a pod other than the first of a distributed run reports: its rank and weights digest."""
    return json.dumps(
        {"rank": outcome["rank"], "weightsSha256": outcome["weightsSha256"]},
        separators=(",", ":"),
        sort_keys=True,
    )
