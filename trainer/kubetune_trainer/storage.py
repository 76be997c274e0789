"""Artifact storage: s3://bucket/key URIs or local paths, behind one small interface.

The S3 endpoint and credentials come only from the standard environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), so the same code
talks to AWS, SeaweedFS or MinIO, and tests point it at a real server by setting them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kubetune_api.manifest import sha256_file as sha256_file
from kubetune_trainer.errors import TrainerError, storage_error

log = logging.getLogger(__name__)

# S3 error codes whose cause the user can fix, with a hint.
_S3_HINTS = {
    "NoSuchBucket": "the bucket does not exist",
    "NoSuchKey": "the object does not exist",
    "404": "the object does not exist",
    "NotFound": "the object does not exist",
    "AccessDenied": "access denied: check the credentials' permissions on this bucket",
    "403": "access denied: check the credentials' permissions on this bucket",
    "SignatureDoesNotMatch": "the signature does not match: check AWS_SECRET_ACCESS_KEY",
    "InvalidAccessKeyId": "unknown access key: check AWS_ACCESS_KEY_ID",
}


# The only answers that mean "no such object"; anything else (403 above all) is an error.
_MISSING = ("404", "NoSuchKey", "NotFound")
# Written and deleted under a run's prefix at start, to fail fast without write access.
PROBE_NAME = ".kubetune-write-probe"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class FileEntry:
    """One stored file, as listed in manifests."""

    path: str  # relative to the uploaded folder, with forward slashes
    size: int
    sha256: str
    uri: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_uri(uri: str) -> S3Location | Path:
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise storage_error(f"bad S3 URI {uri!r}: no bucket")
        return S3Location(bucket, key)
    if "://" in uri:
        raise storage_error(f"unsupported URI scheme in {uri!r}: use s3://bucket/key or a local path")
    return Path(uri)


def join_uri(uri: str, *parts: str) -> str:
    """Append path parts to an s3:// URI or a local path."""
    location = parse_uri(uri)
    if isinstance(location, Path):
        return str(location.joinpath(*parts))
    key = "/".join(p.strip("/") for p in (location.key, *parts) if p.strip("/"))
    return f"s3://{location.bucket}/{key}"


def describe_file(path: Path, relative: str, uri: str) -> FileEntry:
    return FileEntry(path=relative, size=path.stat().st_size, sha256=sha256_file(path), uri=uri)


def _files_under(folder: Path) -> list[tuple[Path, str]]:
    return sorted((p, p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file())


def make_s3_client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        # Third-party S3 servers reject or mis-handle the CRC checksums that new botocore sends by
        # default; only send and check them when an operation requires it.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
        # Path-style works on every S3 server; virtual hosts need DNS for each bucket.
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client("s3", config=config)


@contextmanager
def _s3_errors(action: str, uri: str) -> Iterator[None]:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    def client_error(exc: ClientError) -> TrainerError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or str(
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
        hint = _S3_HINTS.get(code, error.get("Message") or str(exc))
        return storage_error(f"cannot {action} {uri}: {code}: {hint}")

    try:
        yield
    except ClientError as exc:
        raise client_error(exc) from exc
    except S3UploadFailedError as exc:
        # The transfer manager wraps the server's answer (a denied or unsigned PUT) in its own error.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError):
            raise client_error(cause) from exc
        raise storage_error(f"cannot {action} {uri}: {exc}") from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise storage_error(
            f"cannot {action} {uri}: no S3 credentials; set spec.output.credentialsSecretRef to a Secret "
            "holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from exc
    except EndpointConnectionError as exc:
        raise storage_error(
            f"cannot {action} {uri}: S3 endpoint unreachable ({exc}); check spec.output.endpoint"
        ) from exc
    except BotoCoreError as exc:
        raise storage_error(f"cannot {action} {uri}: {exc}") from exc


class Storage:
    """Download and upload files and folders; S3 calls go through one lazily made client."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client()
        return self._client

    # --- download ---

    def download(self, uri: str, dest: Path, skip_suffixes: tuple[str, ...] = ()) -> Path:
        """Fetch a file or a folder. Local paths are used in place; S3 objects land under `dest`.

        An S3 URI names an object if one exists at that key, else a prefix ("folder").
        Returns the local file or folder. `skip_suffixes`: files of a folder not to fetch (weights,
        for a plan that needs a model's config and tokenizer only).
        """
        location = parse_uri(uri)
        if isinstance(location, Path):
            if not location.exists():
                raise storage_error(f"local path does not exist: {location}")
            return location
        dest.mkdir(parents=True, exist_ok=True)
        if location.key and not location.key.endswith("/") and self._object_exists(location):
            target = dest / PurePosixPath(location.key).name
            self._download_object(location, target)
            return target
        return self._download_prefix(location, dest, skip_suffixes)

    def fetch_file(self, uri: str, target: Path) -> bool:
        """Copy one file (an S3 object or a local file) to `target`; False when there is no such file.
        As in _object_exists, only a 404 means missing: anything else raises a storage error."""
        location = parse_uri(uri)
        if isinstance(location, Path):
            if not location.is_file():
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(location, target)
            return True
        if not self._object_exists(location):
            return False
        self._download_object(location, target)
        return True

    def _object_exists(self, location: S3Location) -> bool:
        """Whether the object exists. Only a 404 means missing: a denied read raises, so that a lack
        of rights is never taken for an absent file (a run "not trained yet", a prefix to list)."""
        from botocore.exceptions import ClientError

        with _s3_errors("read", location.uri):
            try:
                self.client.head_object(Bucket=location.bucket, Key=location.key)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _MISSING:
                    return False
                if code == "403":
                    # HEAD responses have no body, so S3 sends a bare 403 for a bad signature, an
                    # unknown key and a denied read alike; a one-byte GET names the precise error.
                    self.client.get_object(Bucket=location.bucket, Key=location.key, Range="bytes=0-0")
                    return True
                raise
        return True

    def _download_object(self, location: S3Location, target: Path) -> None:
        log.info("downloading %s -> %s", location.uri, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _s3_errors("download", location.uri):
            self.client.download_file(location.bucket, location.key, str(target))

    def _download_prefix(self, location: S3Location, dest: Path, skip_suffixes: tuple[str, ...] = ()) -> Path:
        prefix = location.key.rstrip("/") + "/" if location.key else ""
        keys = self.list_keys(S3Location(location.bucket, prefix))
        if not keys:
            raise storage_error(f"nothing found at {location.uri}: no object and no objects under it")
        for key in keys:
            if skip_suffixes and key.endswith(skip_suffixes):
                continue
            relative = PurePosixPath(key[len(prefix) :])
            if ".." in relative.parts:
                raise storage_error(f"refusing object key that escapes the folder: {key}")
            self._download_object(S3Location(location.bucket, key), dest.joinpath(*relative.parts))
        return dest

    def list_keys(self, location: S3Location) -> list[str]:
        keys: list[str] = []
        with _s3_errors("list", location.uri):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=location.key
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
        return sorted(keys)

    # --- upload ---

    def upload_file(self, path: Path, uri: str, relative: str | None = None) -> FileEntry:
        entry = describe_file(path, relative or path.name, uri)
        location = parse_uri(uri)
        if isinstance(location, Path):
            location.parent.mkdir(parents=True, exist_ok=True)
            if location.resolve() != path.resolve():
                shutil.copyfile(path, location)
            return entry
        log.info("uploading %s -> %s (%d bytes)", path, uri, entry.size)
        with _s3_errors("upload", uri):
            # The digest travels as metadata so a reader can verify without the manifest.
            self.client.upload_file(
                str(path), location.bucket, location.key, ExtraArgs={"Metadata": {"sha256": entry.sha256}}
            )
        return entry

    def upload_dir(self, folder: Path, uri: str) -> list[FileEntry]:
        """Upload every file under `folder` to `uri`/<relative path>; returns size and sha256 of each."""
        return [self.upload_file(path, join_uri(uri, rel), rel) for path, rel in _files_under(folder)]

    def upload_bytes(self, data: bytes, uri: str, tmp_dir: Path) -> FileEntry:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        path = tmp_dir / PurePosixPath(uri).name
        path.write_bytes(data)
        return self.upload_file(path, uri)

    def read_if_exists(self, uri: str, scratch: Path) -> str | None:
        """The text of one file, or None if there is no such file."""
        location = parse_uri(uri)
        if isinstance(location, Path):
            return location.read_text() if location.is_file() else None
        if not self._object_exists(location):
            return None
        target = scratch / PurePosixPath(location.key).name
        self._download_object(location, target)
        return target.read_text()

    def check_writable(self, uri: str, scratch: Path, what: str = "the run's output") -> None:
        """Write and delete a small probe object under the folder `uri`: missing write (or delete)
        rights fail here, before hours of training, with the URI and the S3 error code."""
        probe = join_uri(uri, PROBE_NAME)
        try:
            self.upload_bytes(b"kubetune write probe\n", probe, scratch)
            self.delete_file(probe)
        except TrainerError as exc:
            raise storage_error(f"no write access to {what} {uri}: {exc.message}") from exc
        log.info("write access to %s checked", uri)

    # --- listing and deleting folders ---

    def list_folder(self, uri: str) -> list[str]:
        """Relative paths of every file under the folder `uri` (S3 prefix or local folder)."""
        location = parse_uri(uri)
        if isinstance(location, Path):
            return [rel for _, rel in _files_under(location)] if location.is_dir() else []
        prefix = location.key.rstrip("/") + "/" if location.key else ""
        return [key[len(prefix) :] for key in self.list_keys(S3Location(location.bucket, prefix))]

    def delete_file(self, uri: str) -> None:
        location = parse_uri(uri)
        if isinstance(location, Path):
            location.unlink(missing_ok=True)
            return
        with _s3_errors("delete", uri):
            self.client.delete_object(Bucket=location.bucket, Key=location.key)

    def delete_folder(self, uri: str) -> None:
        """Delete every file under the folder `uri`."""
        location = parse_uri(uri)
        if isinstance(location, Path):
            shutil.rmtree(location, ignore_errors=True)
            return
        prefix = location.key.rstrip("/") + "/"
        keys = self.list_keys(S3Location(location.bucket, prefix))
        with _s3_errors("delete", uri):
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                answer = self.client.delete_objects(
                    Bucket=location.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                # DeleteObjects answers 200 and lists the keys it could not delete.
                for error in answer.get("Errors", [])[:1]:
                    key_uri = S3Location(location.bucket, error.get("Key", "")).uri
                    code = error.get("Code", "")
                    raise storage_error(
                        f"cannot delete {key_uri}: {code}: {_S3_HINTS.get(code, error.get('Message'))}"
                    )
