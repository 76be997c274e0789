"""Integrity of a run's own files: every file the run wrote is recorded with its sha256, and every
read of it back (a checkpoint to resume from, the trained adapter or model the export takes) is
checked against that record before it is used.

The record is `{"files": {relative path: {"sha256": ..., "size": ...}}}`: the checkpoint's completion
marker (written last) holds it, and the training result (`training_result.json`) holds the trained
folder's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kubetune_trainer.errors import storage_error
from kubetune_trainer.storage import FileEntry, join_uri, sha256_file

Digests = dict[str, str]  # relative path -> sha256


def record(entries: Iterable[FileEntry]) -> dict[str, Any]:
    """The checksum record of uploaded files."""
    return {
        "files": {e.path: {"sha256": e.sha256, "size": e.size} for e in sorted(entries, key=lambda e: e.path)}
    }


def parse_record(text: str, uri: str) -> Digests:
    """The digests of a checksum record; a storage error naming `uri` if it is not one."""
    try:
        files = json.loads(text)["files"] if text.strip() else None
        digests = {str(path): str(entry["sha256"]) for path, entry in files.items()} if files else None
    except (ValueError, KeyError, TypeError, AttributeError):
        digests = None
    if not digests:
        raise storage_error(f"{uri} holds no sha256 record of the files it vouches for; cannot verify them")
    return digests


def verify_folder(folder: Path, expected: Digests, uri: str, ignore: Iterable[str] = ()) -> None:
    """Every file under `folder` (downloaded from the folder `uri`) must be in `expected` with the same
    sha256, and every expected file must be there. A storage error names the first object that fails."""
    skipped = set(ignore)
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    present = {rel: p for rel, p in present.items() if rel not in skipped}
    for rel in sorted(set(expected) - set(present)):
        raise storage_error(f"{join_uri(uri, rel)} is recorded but missing: the stored files are incomplete")
    for rel, path in sorted(present.items()):
        if rel not in expected:
            raise storage_error(
                f"{join_uri(uri, rel)} is not in the sha256 record; refusing an unverified file"
            )
        actual = sha256_file(path)
        if actual != expected[rel]:
            raise storage_error(
                f"{join_uri(uri, rel)} is corrupt: its sha256 {actual} is not the recorded {expected[rel]}"
            )
