"""Starts one container as a local process inside a private mount (and UTS) namespace.

The namespace lets volumes, the termination-message file and /etc/hosts sit at their real
paths for that process only. As on a kubelet, the process gets its own session so that a
signal reaches everything it started.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .security import Identity

ROOT = Identity(uid=0, gid=0, groups=(), read_only_root=False, no_new_privileges=False)
# The kernel's filesystems stay as a runtime leaves them; everything else may be made read-only.
_KERNEL_MOUNTS = ("/proc", "/sys", "/dev")

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def parse_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "4G", "1e9" is not used here) in bytes."""
    match = _QUANTITY.match(str(quantity))
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"unsupported memory quantity {quantity!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    hostname: str
    mounts: list[Mount]
    log_file: Path
    memory_cgroup: Path | None
    # Folders the process needs (the project and its Python): re-exposed if a volume covers them.
    keep_visible: tuple[Path, ...] = ()
    identity: Identity = ROOT


def _memory_cgroup_root() -> Path | None:
    """This process's cgroup-v1 memory controller directory, if we may create children in it."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                root = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                if os.access(root, os.W_OK):
                    return root
    except OSError:
        pass
    return None


MEMORY_CGROUP_ROOT = _memory_cgroup_root()


def make_memory_cgroup(name: str, limit: str | None) -> Path | None:
    """A memory cgroup enforcing the container's limit, so an OOM kill is real and observable."""
    if MEMORY_CGROUP_ROOT is None:
        return None
    path = MEMORY_CGROUP_ROOT / "kubetune-pods" / name
    path.mkdir(parents=True, exist_ok=True)
    if limit:
        (path / "memory.limit_in_bytes").write_text(str(parse_bytes(limit)))
    return path


def oom_killed(cgroup: Path | None) -> bool:
    if cgroup is None:
        return False
    try:
        for line in (cgroup / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and int(value) > 0:
                return True
    except OSError:
        pass
    return False


def remove_cgroup(cgroup: Path | None) -> None:
    if cgroup is not None:
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def untraversable_ancestor(path: Path) -> Path | None:
    """The highest folder above `path` that other users may not enter (say a 0700 /root holding the
    Python installation), or None."""
    for ancestor in reversed(path.parents):
        if ancestor != Path("/") and not ancestor.stat().st_mode & 0o001:
            return ancestor
    return None


def _read_only_root_lines(spec: LaunchSpec) -> list[str]:
    """Every mount but the kernel's and the pod's own volumes becomes read-only, in this namespace."""
    keep = [*_KERNEL_MOUNTS, *(m.target.rstrip("/") for m in spec.mounts)]
    patterns = "|".join(f"{shlex.quote(k)}|{shlex.quote(k)}/*" for k in keep)
    return [
        "for target in $(awk '{print $5}' /proc/self/mountinfo); do",
        f'  case "$target" in {patterns}) continue ;; esac',
        '  mount -o remount,bind,ro "$target"',
        "done",
    ]


def _drop_privileges_prefix(identity: Identity) -> str:
    """setpriv: the container's user and groups, no capabilities, optionally no new privileges."""
    groups = f"--groups={','.join(map(str, identity.groups))}" if identity.groups else "--clear-groups"
    flags = [f"--reuid={identity.uid}", f"--regid={identity.gid}", groups, "--inh-caps=-all"]
    flags += ["--bounding-set=-all"] + (["--no-new-privs"] if identity.no_new_privileges else [])
    return f"setpriv {' '.join(flags)} -- "


def _setup_script(spec: LaunchSpec) -> str:
    lines = ["set -e", f"hostname {shlex.quote(spec.hostname)}"]
    if spec.memory_cgroup is not None:
        lines.append(f"echo $$ > {shlex.quote(str(spec.memory_cgroup / 'cgroup.procs'))}")
    # A volume mounted over an ancestor of the project (say an emptyDir at /tmp) would hide the
    # environment the command runs from. Hold each such folder open first, and bind it back from the
    # open descriptor afterwards (a path would resolve to the covered folder).
    covered = [k for k in spec.keep_visible if any(k.is_relative_to(m.target) for m in spec.mounts)]
    # A non-root process cannot enter a private folder above the environment (root's home): a small
    # tmpfs open to all covers that folder, and the environment is bound back inside it.
    private = {} if spec.identity.is_root else {k: untraversable_ancestor(k) for k in spec.keep_visible}
    private_roots = sorted({a for a in private.values() if a is not None})
    covered += [k for k, a in private.items() if a is not None and k not in covered]
    held = list(zip(range(7, 10), covered, strict=False))  # sh redirections take one-digit descriptors
    lines += [f"exec {fd}<{shlex.quote(str(path))}" for fd, path in held]
    for m in spec.mounts:
        src, dst = shlex.quote(str(m.source)), shlex.quote(m.target)
        if m.source.is_dir():
            lines.append(f"mkdir -p {dst}")
        else:
            # A file mount needs an existing file to cover; creating an empty one is harmless.
            lines.append(f"mkdir -p $(dirname {dst}); [ -e {dst} ] || : > {dst}")
        lines.append(f"mount --bind {src} {dst}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {dst}")
    for folder in private_roots:
        lines.append(f"mount -t tmpfs -o mode=0755,size=64k kubetune-env {shlex.quote(str(folder))}")
    for fd, path in held:
        dst = shlex.quote(str(path))
        lines += [
            f"mkdir -p {dst}",
            f"mount --no-canonicalize --bind /proc/self/fd/{fd} {dst}",
            f"exec {fd}<&-",
        ]
    lines.append(f"mkdir -p {shlex.quote(spec.working_dir)}")
    if spec.identity.read_only_root:
        lines += _read_only_root_lines(spec)
    lines.append(f"cd {shlex.quote(spec.working_dir)}")
    drop = "" if spec.identity == ROOT else _drop_privileges_prefix(spec.identity)
    lines.append(f'exec {drop}"$@"')
    return "\n".join(lines)


def launch(spec: LaunchSpec) -> subprocess.Popen[bytes]:
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_file, "ab") as log:
        return subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                _setup_script(spec),
                "kubetune-container",
                *spec.argv,
            ],
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def exit_code(returncode: int) -> int:
    """Popen reports death by signal as -N; container runtimes report 128+N."""
    return 128 - returncode if returncode < 0 else returncode
