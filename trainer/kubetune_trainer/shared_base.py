"""Shared base ONNX models for swappable adapters: built once per content address, reused by every job.

A swappable .onnx_adapter plugs into a base ONNX model whose LoRA weights are graph inputs. That base
depends only on:
- the base weights (their digest, not their URI: two copies of one model share a base);
- the target (precision, execution provider, int4 settings);
- the builder's version;
- the LoRA input names (the layers and modules the adapter trains; its rank is a symbolic dimension).
The key is a digest of those, and the base lives at `<shared bases>/<key>/` with `base.json` written
last: the record of its inputs and of every file's sha256. A folder without base.json is incomplete
and is rebuilt; one with it is never written again, only read (and verified file by file).

The adapter file records the key of the base it was exported against (`adapter.json`), so a runtime
can refuse an adapter from another base (`check_adapter`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_api.layout import ADAPTER_RECORD_FILE, BASE_RECORD_FILE, join_uri
from kubetune_api.v1alpha1 import ExportTarget
from kubetune_trainer import integrity
from kubetune_trainer.errors import export_error
from kubetune_trainer.storage import FileEntry, Storage, sha256_file

log = logging.getLogger("kubetune_trainer.shared_base")

KEY_LENGTH = 24
# Claims of a base being stored (claimed_by_another), under the shared bases' root.
CLAIMS_DIR = ".claims"
CLAIM_SETTLE_SECONDS = 2.0
CLAIM_POLL_SECONDS = 2.0
# How long a claim holds: far longer than uploading a base takes.
CLAIM_WAIT_SECONDS = 600.0


def weights_digest(folder: Path) -> str:
    """sha256 over the sorted (relative path, sha256) of every file of a model folder."""
    listing = [
        (p.relative_to(folder).as_posix(), sha256_file(p)) for p in sorted(folder.rglob("*")) if p.is_file()
    ]
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()


def builder_version() -> str:
    import onnxruntime_genai

    return str(onnxruntime_genai.__version__)


def key_inputs(weights_sha256: str, target: ExportTarget, lora_inputs: list[str]) -> dict[str, Any]:
    settings = target.to_k8s()
    if target.precision != "int4":
        settings.pop("int4", None)  # ignored by the builder for other precisions
    return {
        "baseWeightsSha256": weights_sha256,
        "target": settings,
        "builderVersion": builder_version(),
        "loraInputs": sorted(lora_inputs),
    }


def base_key(inputs: dict[str, Any]) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class SharedBase:
    key: str
    uri: str
    local_dir: Path  # the base model folder (genai_config.json, model.onnx, ...)
    inputs: dict[str, Any]
    reused: bool  # found complete in storage; else built here and not yet stored


def find_stored(storage: Storage, uri: str, key: str, workdir: Path) -> SharedBase | None:
    """The stored base at `uri`, downloaded and verified against its base.json; None if incomplete."""
    text = storage.read_if_exists(join_uri(uri, BASE_RECORD_FILE), workdir / f"base-{key}-record")
    if text is None:
        return None
    record_uri = join_uri(uri, BASE_RECORD_FILE)
    expected = integrity.parse_record(text, record_uri)
    local = storage.download(uri, workdir / f"base-{key}")  # a local folder is used in place
    integrity.verify_folder(local, expected, uri, ignore=(BASE_RECORD_FILE,))
    return SharedBase(key, uri, local, json.loads(text).get("inputs", {}), reused=True)


def claim_uri(base_uri: str) -> str:
    """Where a job storing a base says so: beside the bases, outside the base's own folder."""
    root, key = base_uri.rstrip("/").rsplit("/", 1)
    return join_uri(root, CLAIMS_DIR, f"{key}.json")


def claimed_by_another(storage: Storage, base: SharedBase, scratch: Path, claimant: str) -> bool:
    """Claims the storing of this base unless another run holds a fresh claim. Two jobs that finish
    together both find no base.json; each writes its claim, waits CLAIM_SETTLE_SECONDS and reads the
    claim back: the last write is what both read, so exactly one goes on. A claim names its run
    (`claimant`), so a retried export of the same run takes its own earlier claim over at once instead
    of waiting it out."""
    uri = claim_uri(base.uri)

    def current() -> dict[str, Any] | None:
        text = storage.read_if_exists(uri, scratch)
        return json.loads(text) if text else None

    held = current()
    if held is not None and time.time() - float(held.get("at", 0)) < CLAIM_WAIT_SECONDS:
        if held.get("claimant") != claimant:
            return True
        log.info("taking over this run's own earlier claim on the shared base %s (a retry)", base.uri)
    token = uuid.uuid4().hex
    claim = {"token": token, "claimant": claimant, "at": time.time()}
    storage.upload_bytes(json.dumps(claim).encode(), uri, scratch / "claim")
    time.sleep(CLAIM_SETTLE_SECONDS)
    held = current()
    return held is not None and held.get("token") != token


def store(storage: Storage, base: SharedBase, workdir: Path, claimant: str) -> tuple[list[FileEntry], bool]:
    """Upload a base built here, base.json last; returns its files and whether a stored copy was used
    instead. If another job completed the same key meanwhile, or another run is storing it now (its
    claim), its copy stays (it is never overwritten) and that copy's files are returned. A claimant that
    never finishes is waited for CLAIM_WAIT_SECONDS, then this job stores its own. `claimant` names
    this run (its output root), the same on every retry of its export."""
    record_uri = join_uri(base.uri, BASE_RECORD_FILE)
    scratch = workdir / "base-race"
    if storage.read_if_exists(record_uri, scratch) is not None:
        return listed(storage, base.uri, scratch), True
    if claimed_by_another(storage, base, scratch, claimant):
        log.info(
            "another export is storing the shared base %s (%s); waiting up to %.0f s for its %s",
            base.uri,
            claim_uri(base.uri),
            CLAIM_WAIT_SECONDS,
            BASE_RECORD_FILE,
        )
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while time.monotonic() < deadline:
            if storage.read_if_exists(record_uri, scratch) is not None:
                return listed(storage, base.uri, scratch), True
            time.sleep(CLAIM_POLL_SECONDS)
        log.warning("the claim on %s was never completed; storing this export's base instead", base.uri)
    entries = storage.upload_dir(base.local_dir, base.uri)
    record = {**integrity.record(entries), "key": base.key, "inputs": base.inputs}
    record_file = workdir / f"base-{base.key}.json"
    record_file.write_text(json.dumps(record, indent=2, sort_keys=True))
    return [*entries, storage.upload_file(record_file, record_uri, BASE_RECORD_FILE)], False


def listed(storage: Storage, uri: str, scratch: Path) -> list[FileEntry]:
    """A stored base's files as its base.json records them (and base.json itself)."""
    text = storage.read_if_exists(join_uri(uri, BASE_RECORD_FILE), scratch) or ""
    record = json.loads(text)
    entries = [
        FileEntry(path, int(info["size"]), str(info["sha256"]), join_uri(uri, path))
        for path, info in sorted(record["files"].items())
    ]
    scratch.mkdir(parents=True, exist_ok=True)
    record_path = scratch / BASE_RECORD_FILE
    record_path.write_text(text)
    record_uri = join_uri(uri, BASE_RECORD_FILE)
    entries.append(
        FileEntry(BASE_RECORD_FILE, record_path.stat().st_size, sha256_file(record_path), record_uri)
    )
    return entries


def adapter_record(base: SharedBase, base_revision: str | None, target: str) -> dict[str, Any]:
    """adapter.json: which base the .onnx_adapter beside it was exported against."""
    return {
        "target": target,
        "base": {
            "key": base.key,
            "uri": base.uri,
            "revision": base_revision,
            "baseWeightsSha256": base.inputs.get("baseWeightsSha256"),
        },
    }


def check_adapter(base_dir: Path, adapter_dir: Path) -> None:
    """Refuse an adapter exported against another base: its adapter.json must name the key of the
    base.json in (or recorded for) `base_dir`."""
    base_record = json.loads((base_dir / BASE_RECORD_FILE).read_text())
    adapter = json.loads((adapter_dir / ADAPTER_RECORD_FILE).read_text())["base"]
    if adapter["key"] != base_record["key"]:
        theirs = base_record.get("inputs", {}).get("baseWeightsSha256", "?")
        raise export_error(
            f"adapter {adapter_dir} was exported against base {adapter['key']} (model revision "
            f"{adapter.get('revision')}, weights sha256 {str(adapter.get('baseWeightsSha256'))[:12]}), not "
            f"this base {base_record['key']} (weights sha256 {str(theirs)[:12]}): load it with its own base"
        )
