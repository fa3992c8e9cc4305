"""Who holds a bank's write lock: recorded by the holder, checked when a writer times out.

The lock itself is an OS file lock (flock), which the kernel releases when its holder dies, so a
timeout almost always means a live process holds it (a long import, a hung run). Deleting the
lock file would then let two writers in at once. Instead
each holder records its pid, host and command beside the lock, and a writer that times out says
who holds it. Only a lock whose recorded holder is dead and that no process on this machine has
open (a lock file on a filesystem without flock) is broken.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


def holder_path(lock_file: Path) -> Path:
    """The holder record beside a lock file."""
    return lock_file.with_name(lock_file.name + ".holder")


def record_holder(lock_file: Path) -> None:
    """Record this process as the holder (called with the lock held)."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": " ".join(sys.argv)[:200]}
    tmp = lock_file.with_name(f"{lock_file.name}.holder.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(info))
        os.replace(tmp, holder_path(lock_file))


def read_holder(lock_file: Path) -> dict[str, Any] | None:
    """The last recorded holder, or None."""
    try:
        info = json.loads(holder_path(lock_file).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_with_open(path: Path) -> list[int]:
    """Pids on this machine that have ``path`` open (Linux ``/proc``; empty elsewhere)."""
    target = os.path.realpath(path)
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if any(os.path.realpath(fd) == target for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
    return sorted(set(pids) - {os.getpid()})


def break_if_stale(lock_file: Path) -> bool:
    """Remove a lock left by a dead holder on this machine that nobody holds open; True if removed."""
    info = read_holder(lock_file)
    if info is None or info.get("host") != socket.gethostname() or pid_alive(info["pid"]):
        return False
    if processes_with_open(lock_file):
        return False
    with contextlib.suppress(OSError):
        holder_path(lock_file).unlink()
    with contextlib.suppress(FileNotFoundError):
        lock_file.unlink()
    return True


def describe_holder(bank: Path, lock_file: Path, timeout: float) -> str:
    """One message: who holds the lock and what to do about it."""
    head = f"the case bank at {bank} is locked by another writer for over {timeout:.0f}s"
    info = read_holder(lock_file)
    if info is None:
        return f"{head}; no holder is recorded. Wait for other memento processes using this bank to finish."
    since = time.strftime("%H:%M:%S", time.localtime(float(info.get("since") or 0)))
    who = f"pid {info['pid']} ({info.get('command') or 'unknown command'})"
    if info.get("host") != socket.gethostname():
        return (
            f"{head}: held by {who} on host {info.get('host')} since {since}. Wait for it to finish, or stop it there."
        )
    if pid_alive(info["pid"]):
        return f"{head}: held by {who} on this machine since {since}. Wait for it to finish, or stop it (kill {info['pid']})."
    holders = processes_with_open(lock_file)
    return (
        f"{head}: the recorded holder {who} has exited, but pid(s) {', '.join(map(str, holders)) or '?'} still "
        "hold the lock (inherited from it). Stop them; do not delete the lock file while they run."
    )
