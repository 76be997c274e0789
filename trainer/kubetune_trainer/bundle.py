"""Download an export's bundle and verify every file against its manifest.

    python -m kubetune_trainer.bundle verify <manifest-uri> [--download DIR]
    kubetune-bundle verify <manifest-uri> [--download DIR]     # the same, as installed

<manifest-uri> is the export's manifest.json (s3://bucket/<run>/manifest.json, or
<run>/rejected/manifest.json after a failed gate), or a local path. Every file of every artifact is
fetched and its size and sha256 compared with the manifest's record. With --download the files stay
in DIR, which mirrors the storage below the deepest folder holding the manifest and every artifact
(DIR/adapter/..., DIR/onnx/<target>/...); without it each file is deleted once checked.

S3 settings come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_DEFAULT_REGION.

Every missing or corrupt object is named by its URI, then one line sums up. Exit status: 0 when every
file matches; 1 when any is missing or corrupt (all are checked first); 2 when nothing could be
verified: bad usage, a missing or invalid manifest, an unknown schemaVersion, or an S3 error other
than a missing object (credentials, access denied, unreachable endpoint).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kubetune_api import manifest as manifest_model
from kubetune_api.manifest import FileRecord, Manifest, local_folders
from kubetune_trainer.errors import TrainerError, config_error
from kubetune_trainer.storage import Storage, sha256_file

EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_VERIFY = 0, 1, 2


def parse_manifest(text: str, uri: str) -> Manifest:
    """The manifest, or a config error naming `uri` and what is wrong with it."""
    try:
        return manifest_model.parse_manifest(text, uri, reader="this verifier")
    except manifest_model.ManifestError as exc:
        raise config_error(str(exc)) from exc


@dataclass
class Report:
    """What a verification found; each problem is also printed as it is found."""

    files: int = 0
    total_bytes: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    def add(self, kind: Literal["missing", "corrupt"], uri: str, detail: str) -> None:
        (self.missing if kind == "missing" else self.corrupt).append(uri)
        print(f"{kind:<8} {uri}: {detail}")

    @property
    def summary(self) -> str:
        return (
            f"checked {self.files} files, {self.total_bytes} bytes: "
            f"{len(self.missing) + len(self.corrupt)} problems "
            f"({len(self.missing)} missing, {len(self.corrupt)} corrupt)"
        )


def check_file(record: FileRecord, target: Path, storage: Storage, report: Report) -> None:
    """Fetch one recorded file to `target` and compare its size and sha256 with the record."""
    target.unlink(missing_ok=True)  # a file left by an earlier download proves nothing
    report.files += 1
    if not storage.fetch_file(record.uri, target):
        report.add("missing", record.uri, "no such object (404)")
        return
    size, sha256 = target.stat().st_size, sha256_file(target)
    report.total_bytes += size
    if size != record.size:
        report.add("corrupt", record.uri, f"size expected {record.size}, actual {size}")
    elif sha256 != record.sha256:
        report.add("corrupt", record.uri, f"sha256 expected {record.sha256}, actual {sha256}")


def verify(manifest_uri: str, download: Path | None, storage: Storage) -> Report:
    """Fetch and check every file of the bundle; storage errors other than a missing object raise."""
    with tempfile.TemporaryDirectory(prefix="kubetune-bundle-") as scratch:
        text = storage.read_if_exists(manifest_uri, Path(scratch))
        if text is None:
            raise config_error(f"no manifest at {manifest_uri}")
        manifest = parse_manifest(text, manifest_uri)
        root = download or Path(scratch) / "bundle"
        report = Report()
        for artifact, folder in zip(manifest.artifacts, local_folders(manifest, manifest_uri), strict=True):
            for record in artifact.files:
                relative = folder / record.path
                if ".." in relative.parts or relative.is_absolute():
                    raise config_error(f"{manifest_uri}: {record.uri} has a path outside its folder")
                target = root.joinpath(*relative.parts)
                check_file(record, target, storage, report)
                if download is None:
                    target.unlink(missing_ok=True)  # a bundle may be larger than the scratch disk
        return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune_trainer.bundle", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify_command = commands.add_parser("verify", help="fetch every file of a bundle and check its sha256")
    verify_command.add_argument(
        "manifest_uri", help="the bundle's manifest.json: s3://bucket/key or a local path"
    )
    verify_command.add_argument("--download", type=Path, metavar="DIR", help="keep the files under DIR")
    args = parser.parse_args(argv)

    try:
        report = verify(args.manifest_uri, args.download, Storage())
    except TrainerError as exc:
        print(f"cannot verify {args.manifest_uri}: {exc.message}", file=sys.stderr)
        return EXIT_CANNOT_VERIFY
    print(report.summary)
    return EXIT_PROBLEMS if report.missing or report.corrupt else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
