"""Where the local cluster keeps its state, which ports it uses, and the environment clients need.

Everything is derived from environment variables with fixed defaults, so `up`, `down`, `env` and the
test fixtures agree on the same cluster without passing anything around.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK_DIR = REPO_ROOT / "hack"
BUILD_SCRIPT = HACK_DIR / "build-binaries.sh"

DEFAULT_BUCKET = "kubetune-dev"
REGION = "us-east-1"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Port name -> default. Each is overridable with KUBETUNE_<NAME>_PORT, e.g. KUBETUNE_APISERVER_PORT.
# All sit below the kernel's ephemeral range (32768+) so outgoing connections never take them.
PORT_DEFAULTS: dict[str, int] = {
    "etcd": 23790,
    "etcd_peer": 23800,
    "apiserver": 26443,
    "controller_manager": 26257,
    "scheduler": 26259,
    # The node agent serves each fake node's kubelet endpoint (logs) on base, base+1, ...
    "nodeagent_kubelet_base": 26250,
    # SeaweedFS `weed mini` runs master, volume, filer, S3 and an admin server in one process;
    # every one of their HTTP and gRPC ports is pinned so none falls back to a well-known default.
    "s3": 28333,
    "s3_grpc": 28334,
    "weed_master": 28335,
    "weed_master_grpc": 28336,
    "weed_volume": 28337,
    "weed_volume_grpc": 28338,
    "weed_filer": 28339,
    "weed_filer_grpc": 28340,
    # The mini's maintenance worker dials the admin server at its HTTP port + 10000 whatever
    # -admin.port.grpc says, so these two keep that offset.
    "weed_admin": 18341,
    "weed_admin_grpc": 28341,
    # Kueue and JobSet: their admission (and Kueue's CRD conversion) webhooks, which the apiserver
    # calls by URL, and their health probes. Their metrics servers are off.
    "kueue_webhook": 29443,
    "kueue_health": 29081,
    "jobset_webhook": 29444,
    "jobset_health": 29082,
}


def port_env_var(name: str) -> str:
    return f"KUBETUNE_{name.upper()}_PORT"


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    nodeagent_kubelet_base: int
    s3: int
    s3_grpc: int
    weed_master: int
    weed_master_grpc: int
    weed_volume: int
    weed_volume_grpc: int
    weed_filer: int
    weed_filer_grpc: int
    weed_admin: int
    weed_admin_grpc: int
    kueue_webhook: int
    kueue_health: int
    jobset_webhook: int
    jobset_health: int

    def by_name(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def nodeagent(self) -> list[int]:
        return list(range(self.nodeagent_kubelet_base, self.nodeagent_kubelet_base + NODEAGENT_PORT_BLOCK))

    def all(self) -> list[int]:
        """Every port the kit listens on."""
        values = [v for k, v in self.by_name().items() if k != "nodeagent_kubelet_base"]
        return sorted(values + self.nodeagent())


# Ports from nodeagent_kubelet_base on that the kit treats as the node agent's (one per fake node).
NODEAGENT_PORT_BLOCK = 6


def load_ports() -> Ports:
    values: dict[str, int] = {}
    for name, default in PORT_DEFAULTS.items():
        raw = os.environ.get(port_env_var(name), "")
        values[name] = int(raw) if raw else default
    ports = Ports(**values)
    if len(set(ports.all())) != len(ports.all()):
        raise SystemExit(f"devcluster: port settings clash: {values}")
    return ports


def state_dir() -> Path:
    raw = os.environ.get("KUBETUNE_STATE") or str(Path.home() / ".local/state/kubetune/devcluster")
    return Path(raw).expanduser().resolve()


def bucket_name() -> str:
    name = os.environ.get("KUBETUNE_S3_BUCKET") or DEFAULT_BUCKET
    # S3 naming rules; SeaweedFS refuses e.g. two-letter names with InvalidBucketName.
    if not 3 <= len(name) <= 63:
        raise SystemExit(f"devcluster: bucket name {name!r} must be 3 to 63 characters long")
    return name


def readonly_bucket_name() -> str:
    """A bucket the limited identity may read but not write (tests of refused writes)."""
    return f"{bucket_name()}-readonly"


@dataclass(frozen=True)
class Paths:
    """The layout of the state dir. The marker file guards `down --purge` against deleting a wrong dir."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / ".devcluster"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def s3_data(self) -> Path:
        return self.root / "s3"

    @property
    def s3_credentials(self) -> Path:
        return self.root / "s3-credentials.json"

    @property
    def s3_limited_credentials(self) -> Path:
        """A second identity: reads everything, writes only the main bucket."""
        return self.root / "s3-limited-credentials.json"

    @property
    def s3_identities(self) -> Path:
        """SeaweedFS's identity file (both identities and what each may do), 0600."""
        return self.root / "s3-identities.json"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig users and tests get."""
        return self.root / "kubeconfig"

    @property
    def nodeagent_state(self) -> Path:
        return self.root / "nodeagent"

    @property
    def bin_dir_file(self) -> Path:
        """Records where `up` found the binaries, so `env` need not run the build script."""
        return self.root / "bindir"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pid(self, component: str) -> Path:
        return self.run / f"{component}.pid"


def paths() -> Paths:
    return Paths(state_dir())


def bin_dir() -> Path:
    """The binaries `up` used last; the cluster must have been set up once."""
    f = paths().bin_dir_file
    if not f.is_file():
        raise RuntimeError(f"no local cluster in {f.parent}: run `hack/cluster up` first")
    return Path(f.read_text().strip())


def s3_credentials(f: Path | None = None) -> tuple[str, str]:
    f = f or paths().s3_credentials
    if not f.is_file():
        raise RuntimeError(f"no S3 credentials in {f}: run `hack/cluster up` first")
    data = json.loads(f.read_text())
    return data["access_key_id"], data["secret_access_key"]


def s3_endpoint() -> str:
    return f"http://127.0.0.1:{load_ports().s3}"


def apiserver_url() -> str:
    return f"https://127.0.0.1:{load_ports().apiserver}"


def cluster_env() -> dict[str, str]:
    """KUBECONFIG and S3 settings for clients of the running cluster (PATH excluded; see bin_dir())."""
    p = paths()
    if not p.kubeconfig.is_file():
        raise RuntimeError(f"no kubeconfig in {p.root}: run `hack/cluster up` first")
    access_key, secret_key = s3_credentials()
    return {
        "KUBECONFIG": str(p.kubeconfig),
        "AWS_ENDPOINT_URL": s3_endpoint(),
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": REGION,
        # boto3 >= 1.36 adds CRC checksums by default that S3-compatible stores may reject.
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        "KUBETUNE_S3_BUCKET": bucket_name(),
        "KUBETUNE_S3_READONLY_BUCKET": readonly_bucket_name(),
        **dict(zip(LIMITED_CREDENTIAL_VARIABLES, s3_credentials(p.s3_limited_credentials), strict=True)),
    }


# The limited identity's keys in cluster_env(): tests put them in a Secret to be refused a write.
LIMITED_CREDENTIAL_VARIABLES = ("KUBETUNE_S3_LIMITED_ACCESS_KEY_ID", "KUBETUNE_S3_LIMITED_SECRET_ACCESS_KEY")


def subprocess_env() -> dict[str, str]:
    """This process's environment plus cluster_env() and the kit's binaries first on PATH, for
    running kubectl, helm or clients of the cluster as subprocesses."""
    env = dict(os.environ)
    env.update(cluster_env())
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env
