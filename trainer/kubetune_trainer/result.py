"""The result document a successful trainer or exporter leaves as its termination message.

The operator reads it from the pod status (no S3 access needed) and copies `metrics` and
`artifacts` into the FineTuneJob's status. It must stay under the kubelet's 4 KiB limit, so it
holds numbers and artifact summaries only; the full record is in S3 at `resultUri` (the training
result, or the export's manifest).

Nothing is left out silently: when the whole does not fit, metrics are dropped (the least important
first) and then the artifacts' sizes and digests, and `truncated` names everything dropped
(`metrics.<name>`, `artifacts.sizeBytes`, `artifacts.sha256`). Artifacts themselves (kind and URI)
are never dropped.
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


# Kept longest when metrics must be dropped: the figures a person looks at first.
KEY_METRICS = (
    "evalLoss",
    "trainLoss",
    "steps",
    "evalPerplexity",
    "evalExactMatch",
    "evalF1",
    "evalRougeL",
    "bestStep",
    "bestMetric",
    "evalTorchExactMatch",
    "resumedFromStep",
)
# What summarised artifacts lose, in this order, when even they do not fit (after targets.metrics).
_ARTIFACT_DETAILS = ("sizeBytes", "sha256")


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def _by_importance(metrics: dict[str, float]) -> list[str]:
    rank = {name: i for i, name in enumerate(KEY_METRICS)}
    return sorted(metrics, key=lambda k: (rank.get(k, len(rank)), k))


def render(
    metrics: dict[str, Any],
    artifacts: list[dict[str, Any]],
    result_uri: str,
    targets: list[dict[str, Any]] | None = None,
) -> str:
    """Compact JSON of at most RESULT_LIMIT bytes. If the whole does not fit, metrics are dropped one
    by one (least important first), then the artifacts' details; `truncated` lists what was dropped
    (each metric by name, or `metrics.*` with a count when even the names would not fit) and
    `resultUri` points at the full record. Raises if even the artifacts' kinds and URIs do not fit,
    which takes output URIs of several hundred characters: a loud failure, never a silent loss. The
    export targets' figures go before the artifact details (`targets.metrics`); their names and
    verdicts stay."""
    numbers = numeric(metrics)
    document: dict[str, Any] = {"metrics": numbers, "artifacts": artifacts}
    if targets:
        # The export's targets: name, gate verdict and figures (status.exportTargets).
        document["targets"] = targets
    if "weightsSha256" in metrics:
        # Every rank of a distributed run reports it: equal digests show they trained one model.
        document["weightsSha256"] = metrics["weightsSha256"]
    text = _dump(document)
    if len(text.encode()) <= RESULT_LIMIT:
        return text
    # Naming each dropped metric, or only counting them: whichever keeps more (artifact details first).
    fits = [_fit(dict(document, resultUri=result_uri), numbers, named) for named in (True, False)]
    fitting = [f for f in fits if len(f[2].encode()) <= RESULT_LIMIT]
    if not fitting:
        raise ValueError(
            f"the artifacts' kinds and URIs alone exceed {RESULT_LIMIT} bytes: {fits[-1][2][:200]}"
        )
    return min(fitting, key=lambda f: (f[0], -f[1]))[2]


def _fit(document: dict[str, Any], numbers: dict[str, float], named: bool) -> tuple[int, int, str]:
    """(artifact details dropped, metrics kept, the document) after dropping what must go."""
    kept, order = dict(numbers), _by_importance(numbers)
    dropped: list[str] = []
    document["metrics"] = kept

    def size() -> int:
        summary = [f"metrics.* ({len(dropped)} of {len(numbers)})"] if dropped else []
        document["truncated"] = [f"metrics.{n}" for n in dropped] if named else summary
        document["truncated"] += [d if "." in d else f"artifacts.{d}" for d in details_dropped]
        return len(_dump(document).encode())

    details_dropped: list[str] = []
    while order and size() > RESULT_LIMIT:
        name = order.pop()
        del kept[name]
        dropped.append(name)
    if size() > RESULT_LIMIT and document.get("targets"):
        document["targets"] = [{k: v for k, v in t.items() if k != "metrics"} for t in document["targets"]]
        details_dropped.append("targets.metrics")
    for detail in _ARTIFACT_DETAILS:
        if size() <= RESULT_LIMIT:
            break
        document["artifacts"] = [{k: v for k, v in a.items() if k != detail} for a in document["artifacts"]]
        details_dropped.append(detail)
    size()
    return len(details_dropped), len(kept), _dump(document)


def render_rank(outcome: dict[str, Any]) -> str:
    """What a pod other than the first of a distributed run reports: its rank and weights digest."""
    return json.dumps(
        {"rank": outcome["rank"], "weightsSha256": outcome["weightsSha256"]},
        separators=(",", ":"),
        sort_keys=True,
    )
