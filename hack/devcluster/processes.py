"""Background processes tracked by pid files, each the leader of its own session.

The kit's `up` exits while the components keep running, so `down` and `status` find them again by
pid file. A pid is only trusted while /proc/<pid>/cmdline still mentions the expected program, so a
stale pid file whose pid was reused by something else is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Component:
    name: str  # also the log and pid file stem
    program: str  # argv[0]'s basename, or an argument such as the module after `python -m`


def _args(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.decode(errors="replace").split("\0")


def pid_alive(pid: int) -> bool:
    """True while any thread of `pid` runs: a Go process's main thread can be a zombie while the
    others still close its listening sockets."""
    try:
        tasks = [t.name for t in Path(f"/proc/{pid}/task").iterdir()]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(not _is_zombie_task(pid, tid) for tid in tasks)


def _is_zombie_task(pid: int, tid: str) -> bool:
    # The state follows the parenthesised command name, which may itself contain spaces.
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _is_ours(args: list[str], component: Component, owner: str) -> bool:
    """The process runs `component` and names `owner` (the state dir) in an argument."""
    runs_it = os.path.basename(args[0]) == component.program or component.program in args
    prefix = owner.rstrip("/") + "/"
    return runs_it and any(prefix in a for a in args)


def read_pid(pid_file: Path, component: Component, owner: str) -> int | None:
    """The live pid of `component` started for state dir `owner`, or None; a stale pid file is removed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    args = _args(pid)
    if not args or not _is_ours(args, component, owner) or not pid_alive(pid):
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def start(
    component: Component,
    argv: Sequence[str],
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        # A new session detaches it from the terminal (no SIGHUP when the shell exits) and makes it
        # a process group leader, so `down` can signal it together with any children.
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    # Right after the fork /proc/<pid>/cmdline can still be empty; wait for the exec so that
    # read_pid's command line check does not mistake the new process for a stale pid.
    deadline = time.monotonic() + 5
    while proc.poll() is None and not any(_args(proc.pid) or []) and time.monotonic() < deadline:
        time.sleep(0.01)
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also counts zombies; they hold no ports, so the leader's own state decides.
    return pid_alive(pgid) or _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and pid_alive(int(entry.name)):
            return True
    return False


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.1)
    return not _group_alive(pgid)


def stop(pid: int, term_timeout: float = 15.0) -> str:
    """SIGTERM the process group, SIGKILL it after `term_timeout`; returns how it ended."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "already gone"
    if _wait_gone(pid, term_timeout):
        return "stopped"
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    if _wait_gone(pid, 10.0):
        return f"killed after {term_timeout:.0f} s"
    raise RuntimeError(f"process group {pid} survived SIGKILL")


def tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on any address, read from /proc so no extra tool is needed."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == "0A":  # 0A = TCP_LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports
