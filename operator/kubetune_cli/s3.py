"""S3 as the CLI reads a run's artifacts: a client for the job's output store, objects read whole or in
part, and files downloaded to a temporary name, checked against the manifest, then renamed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubetune_api import OutputSpec
from kubetune_api.manifest import FileRecord, sha256_file
from kubetune_cli.kube import EXIT_API, EXIT_ARTIFACTS, CliError, Kube, explain

CHUNK = 1024 * 1024
# Beside the final name, so the rename stays on one filesystem; never mistaken for a verified file.
PARTIAL_SUFFIX = ".kubetune-partial"


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise CliError(f"{uri}: not an s3:// URI", EXIT_ARTIFACTS)
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return cls(bucket, key)


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


def secret_credentials(cluster: Kube, output: OutputSpec) -> Credentials:
    """The keys of the Secret spec.output.credentialsSecretRef names, read through the API."""
    ref = output.credentials_secret_ref
    if ref is None:
        raise CliError(
            "--credentials-from-secret: spec.output.credentialsSecretRef is not set; the job uses its pods' "
            "ambient credentials, so use your own (AWS_* environment variables or an AWS profile)",
            2,
        )
    what = f"Secret {cluster.namespace}/{ref.name}"
    try:
        secret = cluster.core.read_namespaced_secret(ref.name, cluster.namespace)
    except ApiException as e:
        if e.status in (401, 403):
            raise CliError(
                f"--credentials-from-secret: you may not read {what} (the API server answered {e.status}); "
                "ask for `get` on that Secret, or use your own S3 credentials (AWS_* environment "
                "variables or an AWS profile) without --credentials-from-secret",
                EXIT_API,
            ) from e
        raise CliError(explain(e, what), EXIT_API) from e
    data = secret.data or {}
    values = []
    for key in (ref.access_key_id_key, ref.secret_access_key_key):
        if key not in data:
            raise CliError(f"{what} has no key {key!r} (spec.output.credentialsSecretRef)", EXIT_API)
        try:
            values.append(base64.b64decode(data[key]).decode())
        except (binascii.Error, UnicodeDecodeError) as e:
            raise CliError(f"{what}: key {key!r} is not valid base64 text", EXIT_API) from e
    return Credentials(*values)


def client(output: OutputSpec, credentials: Credentials | None) -> Any:
    """A client for the job's output store: its endpoint, region and addressing style; credentials from
    the Secret, or boto3's own chain (environment, profile, SSO, instance role)."""
    import boto3
    from botocore.config import Config

    config = Config(
        # S3-compatible stores reject or mis-handle the CRC checksums new botocore sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path" if output.force_path_style else "auto"},
    )
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=output.endpoint,
            region_name=output.region,
            config=config,
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None,
        )
    except BotoCoreError as e:  # e.g. AWS_PROFILE names no profile
        raise CliError(f"cannot set up S3 access: {e}", EXIT_ARTIFACTS) from e


def s3_error(e: Exception, uri: str, what: str) -> CliError:
    """An S3 failure as one message naming the object; every one is EXIT_ARTIFACTS."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(e, NoCredentialsError):
        return CliError(
            f"no S3 credentials to read {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AWS_PROFILE), or pass --credentials-from-secret to use the job's own Secret",
            EXIT_ARTIFACTS,
        )
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            return CliError(f"{what} is missing: {uri} does not exist", EXIT_ARTIFACTS)
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return CliError(f"S3 refused to read {uri} ({code}): check your S3 credentials", EXIT_ARTIFACTS)
        return CliError(f"cannot read {what} ({uri}): {code or e}", EXIT_ARTIFACTS)
    return CliError(f"cannot read {what} ({uri}): {e}", EXIT_ARTIFACTS)


def read(s3: Any, uri: str, what: str, byte_range: str | None = None) -> bytes:
    """One object's bytes (or a Range of them)."""
    loc = S3Uri.parse(uri)
    try:
        extra = {"Range": byte_range} if byte_range else {}
        return bytes(s3.get_object(Bucket=loc.bucket, Key=loc.key, **extra)["Body"].read())
    except Exception as e:
        raise s3_error(e, uri, what) from e


def already_verified(path: Path, record: FileRecord) -> bool:
    """A file from an earlier pull with the manifest's size and sha256: nothing to download."""
    return path.is_file() and path.stat().st_size == record.size and sha256_file(path) == record.sha256


def download(s3: Any, record: FileRecord, dest: Path, advance: Callable[[int], None]) -> None:
    """The object to `dest`, through a temporary name: renamed only once its size and sha256 match the
    manifest; on a mismatch the temporary file is removed and the error names the file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    digest = hashlib.sha256()
    size = 0
    loc = S3Uri.parse(record.uri)
    try:
        try:
            body = s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            with open(partial, "wb") as f:
                for chunk in body.iter_chunks(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    advance(len(chunk))
        except (OSError, CliError):
            raise
        except Exception as e:
            raise s3_error(e, record.uri, record.path) from e
        if size != record.size:
            raise CliError(
                f"{record.path}: {size} bytes in S3, the manifest says {record.size} ({record.uri})",
                EXIT_ARTIFACTS,
            )
        if digest.hexdigest() != record.sha256:
            raise CliError(
                f"{record.path}: sha256 {digest.hexdigest()} does not match the manifest's {record.sha256} "
                f"({record.uri})",
                EXIT_ARTIFACTS,
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
