"""Run untrusted Python and shell commands in a per-session workspace, as isolated as the OS allows.

Isolation levels, strongest first (probed once, reported by `Sandbox.info`):

``namespaces`` (running as root, ``unshare`` works)
    New mount, network, PID, IPC and UTS namespaces. The command's whole filesystem is built from
    an allow-list on an empty tmpfs and entered with ``pivot_root``: the system folders (/usr, /etc
    with /etc/shadow and the like covered, /bin, /lib* ...), the interpreter's prefix and venv,
    ``MEMENTO_CODE_RO_PATHS``, all read-only; a minimal /dev, a fresh /proc, a small private
    /dev/shm, and the workspace, the only writable place. The project folder, home folders, other
    runs' checkpoints and other workspaces do not exist inside. The command runs as the workspace's
    own unprivileged uid with no capabilities and ``no_new_privs``; no network (only a down
    loopback). When the command ends or is killed, the PID namespace takes every process with it.
``userns`` (not root, unprivileged user namespaces allowed)
    The same namespaces and filesystem view inside a user namespace; the command keeps the
    caller's real uid outside and all capabilities are dropped before it starts.
``rlimits`` (fallback)
    A scrubbed environment, resource limits and a process group that is killed on timeout; when
    running as root the command still drops to the workspace uid. Network is NOT blocked and
    what the command can read or write is decided by file permissions only.

Every level applies the same resource limits (``setrlimit``: CPU seconds, address space, file
size, processes) and a wall-clock timeout, and caps the output it keeps. RLIMIT_NPROC counts the
processes of a real uid and does not bind root, which is why the command never runs as root.

Workspaces are recorded in a registry in the workspace root (a JSON file under an ``flock``, plus
an in-process lock), shared by every server process using that root. Each has an owner (an MCP
session of one server process): another owner naming it is refused, and it is removed once its
owner has ended (session gone, process dead) or after ``MEMENTO_CODE_IDLE_S`` (3600) idle. Uids
are handed out from the registry, skipping any uid a workspace, an account, a running process or a
leftover folder holds. Disk quota (``MEMENTO_CODE_DISK_MB``, ``MEMENTO_CODE_MAX_FILES``): when the
server owns a private mount namespace (`use_private_mounts`, namespaces level) each workspace is a
size-limited tmpfs, an exact limit; otherwise usage is checked before each write and every 0.1 s
during a run, which bounds it only approximately.

This module imports only the standard library: it is also the PID-1 init of the namespaces,
started as ``python -I -S sandbox.py --init SPEC``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WORKSPACE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Unprivileged uids for workspaces: far above normal accounts, one per workspace, so a fork bomb
# in one workspace cannot eat another workspace's process budget.
UID_BASE = 200_000
UID_SPAN = 50_000
# The only host folders a namespaced command sees (read-only), besides the interpreter's own
# prefix, ``MEMENTO_CODE_RO_PATHS`` and its workspace.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Secrets that live in /etc, covered with /dev/null inside (file permissions already guard them
# from the workspace uid; this also covers the userns level, where the caller's uid is kept).
MASKED_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers")


REGISTRY, REGISTRY_LOCK = ".registry.json", ".registry.lock"
CLONE_NEWNS = 0x00020000
# Set by `use_private_mounts`: workspaces can then be size-limited tmpfs mounts that vanish with
# this process instead of lingering in the host's mount table. Process-wide because it records a
# fact about the process itself (its own mount namespace), set once and never undone.
_PRIVATE_MOUNTS = False


class SandboxError(ValueError):
    """Bad input for the sandbox (workspace id, path outside the workspace, oversized content)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one command.

    Attributes:
        memory_mb: Address-space limit (RLIMIT_AS) per process.
        nproc: Processes (and threads) the workspace uid may have at once (RLIMIT_NPROC).
        file_size_mb: Largest file a command may write (RLIMIT_FSIZE).
        open_files: Open file descriptors per process (RLIMIT_NOFILE).
        output_chars: Characters of stdout and of stderr returned; the rest is dropped.
        max_timeout_s: Upper bound on the wall-clock timeout a caller may ask for.
        disk_mb: Disk quota of one workspace, all files together.
        max_files: Files and folders one workspace may hold.

    """

    memory_mb: int = 1024
    nproc: int = 64
    file_size_mb: int = 64
    open_files: int = 256
    output_chars: int = 20_000
    max_timeout_s: float = 120.0
    disk_mb: int = 256
    max_files: int = 10_000

    @classmethod
    def from_env(cls) -> Limits:
        """Limits from ``MEMENTO_CODE_*`` environment variables, defaults otherwise."""
        env = os.environ
        return cls(
            memory_mb=int(env.get("MEMENTO_CODE_MEMORY_MB") or cls.memory_mb),
            nproc=int(env.get("MEMENTO_CODE_NPROC") or cls.nproc),
            file_size_mb=int(env.get("MEMENTO_CODE_FILE_SIZE_MB") or cls.file_size_mb),
            open_files=int(env.get("MEMENTO_CODE_OPEN_FILES") or cls.open_files),
            output_chars=int(env.get("MEMENTO_CODE_OUTPUT_CHARS") or cls.output_chars),
            max_timeout_s=float(env.get("MEMENTO_CODE_MAX_TIMEOUT_S") or cls.max_timeout_s),
            disk_mb=int(env.get("MEMENTO_CODE_DISK_MB") or cls.disk_mb),
            max_files=int(env.get("MEMENTO_CODE_MAX_FILES") or cls.max_files),
        )


@dataclass
class RunResult:
    """What a command did: exit code, captured output and why it stopped."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    killed_by: str | None = None
    truncated: bool = False
    duration_s: float = 0.0
    isolation: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain dict."""
        return asdict(self)


# -- the in-namespace init (stdlib only, runs as PID 1) -------------------------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
_FLAG_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    # Loaded once in the parent, so a forked child never runs the dynamic loader. Left process-wide
    # on purpose: the handle of the C library already mapped into this process, immutable and
    # never cleared, holding no state of ours (errno is per thread).
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = _libc()
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    if libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mountinfo() -> list[tuple[str, int]]:
    """Mount points with their per-mount flags, parents before children."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            # Octal escapes (\040 for a space) in mount points.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
            flags = 0
            for opt in parts[5].split(","):
                flags |= _FLAG_OPTIONS.get(opt, 0)
            mounts.append((point, flags))
    return mounts


def _drop_capabilities() -> None:
    libc = _libc()
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

    class Data(ctypes.Structure):
        _fields_ = (
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        )

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _set_limits(limits: dict[str, Any]) -> None:
    mb = 1024 * 1024
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2)
    fsize = limits.get("file_size_bytes", limits["file_size_mb"] * mb)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _become(uid: int | None, gid: int | None, limits: dict[str, Any]) -> None:
    """Child side, just before exec: drop to the workspace uid and apply the limits."""
    os.setsid()
    if uid is not None:
        os.setgroups([])
        os.setgid(gid if gid is not None else uid)
        os.setuid(uid)
    _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if uid is None and os.geteuid() == 0:
        _drop_capabilities()
    _set_limits(limits)


MS_MOVE, MNT_DETACH = 8192, 2
# pivot_root has no libc wrapper: its syscall number per architecture (others fall back to chroot).
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# Device nodes a program may need; the rest of /dev is not there.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _pivot_root(new_root: str) -> None:
    """Make ``new_root`` the root of this mount namespace and detach the old one entirely."""
    os.chdir(new_root)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    libc = _libc()
    if number is not None and libc.syscall(number, b".", b".") == 0:
        # The old root is now stacked on "/": detach it and nothing of it stays reachable.
        if libc.umount2(b".", MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount old root: {os.strerror(err)}")
    else:
        # No pivot_root here (e.g. an initramfs root): move the new root over "/" and chroot.
        _mount(new_root, "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def _build_root(spec: dict[str, Any]) -> None:
    """Assemble the command's whole filesystem from an allow-list, then pivot into it.

    The new root is an empty tmpfs holding: the read-only system and interpreter folders named in
    ``spec["ro"]``, the top-level symlinks in ``spec["links"]`` (``/bin -> usr/bin``), a minimal
    ``/dev``, a fresh ``/proc``, a private ``/dev/shm`` and the workspace, the only writable place.
    Nothing else of the host (the project folder, other workspaces, home folders) exists inside.
    """
    workspace = spec["workspace"]
    new_root = spec["new_root"]
    # O_PATH descriptors keep every source reachable once the tmpfs covers ``new_root``.
    sources = {p: os.open(p, os.O_PATH) for p in [workspace, *spec["ro"]] if os.path.exists(p)}
    devices = {d: os.open(f"/dev/{d}", os.O_PATH) for d in DEVICES if os.path.exists(f"/dev/{d}")}
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")

    def bind(fd: int, target: str, is_dir: bool = True) -> None:
        inside = new_root + target
        if is_dir:
            os.makedirs(inside, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(inside), mode=0o755, exist_ok=True)
            if not os.path.lexists(inside):
                os.close(os.open(inside, os.O_WRONLY | os.O_CREAT, 0o644))
        _mount(f"/proc/self/fd/{fd}", inside, None, MS_BIND | MS_REC)

    for path in spec["ro"]:
        if path in sources:
            bind(sources[path], path, os.path.isdir(f"/proc/self/fd/{sources[path]}"))
    for link, target in spec["links"].items():
        if not os.path.lexists(new_root + link):
            os.symlink(target, new_root + link)
    # Secrets in the system folders (/etc/shadow and the like) are covered with /dev/null.
    for secret in spec.get("mask", []):
        inside = new_root + secret
        if "null" in devices and os.path.isfile(inside) and not os.path.islink(inside):
            _mount(f"/proc/self/fd/{devices['null']}", inside, None, MS_BIND)
    os.makedirs(new_root + "/dev", mode=0o755, exist_ok=True)
    _mount("tmpfs", new_root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name, fd in devices.items():
        bind(fd, f"/dev/{name}", is_dir=False)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{new_root}/dev/{name}")
    os.makedirs(new_root + "/dev/shm")
    _mount("tmpfs", new_root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    os.makedirs(new_root + "/proc", exist_ok=True)
    _mount("proc", new_root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    bind(sources[workspace], workspace)
    for fd in [*sources.values(), *devices.values()]:
        os.close(fd)
    _pivot_root(new_root)


def _init_main(spec_json: str) -> int:
    """PID 1 of the sandbox: build the filesystem view, start the command, reap, exit with it."""
    spec = json.loads(spec_json)
    workspace = spec["workspace"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _build_root(spec)
    # Everything is read-only except the workspace, /proc and /dev/shm (bind mounts start out
    # with their source's flags, which must be kept: some are locked in a user namespace).
    writable = {workspace, "/proc", "/dev/shm"}
    for point, flags in _mountinfo():
        if point in writable or point.startswith((workspace + "/", "/proc/")):
            continue
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(workspace)
            _become(spec.get("uid"), spec.get("gid"), spec["limits"])
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except BaseException as exc:  # report why the command could not start
            os.write(2, f"sandbox: cannot start {spec['argv'][0]}: {exc}\n".encode())
        os._exit(127)
    # As PID 1, reap every orphan until the command itself has ended; then leaving tears the
    # namespace down and the kernel kills whatever the command left running.
    while True:
        try:
            done, status = os.wait()
        except ChildProcessError:
            return 127
        if done == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


# -- the host side ---------------------------------------------------------------------------------


def use_private_mounts() -> bool:
    """Give this process a mount namespace of its own (root only, before any thread starts).

    Workspaces then become size-limited tmpfs mounts (a hard disk quota) that nobody else sees
    and that disappear with the process. ``unshare(CLONE_NEWNS)`` affects only the calling thread,
    hence the single-thread condition; the `code` server calls this first thing.
    """
    global _PRIVATE_MOUNTS
    if _PRIVATE_MOUNTS:
        return True
    if os.geteuid() != 0 or len(os.listdir("/proc/self/task")) != 1:
        return False
    if _libc().unshare(CLONE_NEWNS) != 0:
        return False
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _PRIVATE_MOUNTS = True
    return True


def _process_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), or None when it is gone; tells reuse apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _uids_in_use() -> set[int]:
    """Every uid a running process holds (real, effective, saved or filesystem)."""
    uids: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{name}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    uids.update(int(u) for u in line.split()[1:])
                    break
    return uids


def disk_usage(path: Path, stop_files: int | None = None) -> tuple[int, int]:
    """Bytes allocated and entries under ``path`` (symlinks not followed; stops past ``stop_files``)."""
    used, count = 0, 0
    stack = [str(path)]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    used += st.st_blocks * 512
                    count += 1
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                if stop_files is not None and count > stop_files:
                    return used, count
    return used, count


def _which(name: str) -> str | None:
    return shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin:" + os.environ.get("PATH", ""))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Capture:
    """Drains a pipe in a thread, keeping at most ``limit`` bytes."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit = stream, limit
        self.data = bytearray()
        self.total = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        fd = self.stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.total += len(chunk)
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]

    def text(self, chars: int) -> tuple[str, bool]:
        text = self.data.decode("utf-8", errors="replace")
        cut = len(text) > chars or self.total > len(self.data)
        if cut:
            text = text[:chars] + f"\n[... output truncated: {self.total} bytes in all, first {chars} characters kept]"
        return text, cut


class Sandbox:
    """Workspaces under one root and a runner for commands inside them."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        limits: Limits | None = None,
        mode: str | None = None,
    ):
        """Create the sandbox.

        Args:
            root: Folder holding one sub-folder per workspace (``MEMENTO_CODE_WORKSPACE_ROOT``,
                default ``<tmp>/memento-code``).
            limits: Resource limits (default: `Limits.from_env`).
            mode: ``auto`` (default, ``MEMENTO_CODE_SANDBOX``), ``namespaces``, ``userns`` or
                ``rlimits``; a level that does not work here falls back to the next.

        """
        # Settings are read here, not through `mcp_servers.config`: this file also runs as a
        # standalone script inside the sandbox, where the package cannot be imported.
        root = (
            root or os.environ.get("MEMENTO_CODE_WORKSPACE_ROOT") or os.path.join(tempfile.gettempdir(), "memento-code")
        )
        self.root = Path(os.path.realpath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits = limits or Limits.from_env()
        self.is_root = os.geteuid() == 0
        if self.is_root:
            # Workspace uids must be able to traverse down to their own folder.
            os.chmod(self.root, 0o711)
        self.requested = mode or os.environ.get("MEMENTO_CODE_SANDBOX", "auto")
        if self.requested not in ("auto", "namespaces", "userns", "rlimits"):
            raise SandboxError(f"unknown sandbox mode {self.requested!r}: use auto, namespaces, userns or rlimits")
        self.python = os.environ.get("MEMENTO_CODE_PYTHON") or sys.executable
        self.notes: list[str] = []
        # Idle workspaces are removed after this long; never before a command could have ended.
        self.idle_s = float(os.environ.get("MEMENTO_CODE_IDLE_S") or 3600)
        # Each may be a tmpfs of up to ``disk_mb``: a session cannot open them without end.
        self.max_workspaces = int(os.environ.get("MEMENTO_CODE_MAX_WORKSPACES") or 8)
        self._lock = threading.RLock()
        self._me = (os.getpid(), _process_start(os.getpid()))
        self._dead_owners: set[str] = set()
        self._busy: dict[str, int] = {}
        self._uids: dict[str, int | None] = {}
        self.quota = "check"  # until the probe is done
        # Its own probe workspace: another server process owns its own.
        self._probe_id = f"_probe-{os.getpid()}"
        _libc()
        self.mode = "rlimits"  # until the probe has found the strongest level that works
        self._view = self.view()
        self.mode = self._probe()
        with self._registry() as registry:
            if (entry := registry.pop(self._probe_id, None)) is not None:
                self._remove(self._probe_id, entry)
        if self.mode == "namespaces" and _PRIVATE_MOUNTS:
            self.quota = "tmpfs"

    # -- setup -----------------------------------------------------------------------------------

    def _unshare_argv(self, user: bool) -> list[str]:
        unshare = _which("unshare")
        if unshare is None:
            raise FileNotFoundError("unshare (util-linux) not found")
        flags = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
        if user:
            flags = ["--user", "--map-root-user", *flags]
        return [unshare, *flags, "--"]

    def _probe(self) -> str:
        order = ["namespaces", "userns", "rlimits"]
        if self.requested != "auto":
            order = order[order.index(self.requested) :]
        for mode in order:
            if mode == "namespaces" and not self.is_root:
                self.notes.append("namespaces: needs root (CAP_SYS_ADMIN and CAP_SETUID)")
                continue
            if mode == "rlimits":
                self._check_python(mode)
                return mode
            if not self._traversable():
                self.notes.append(f"{mode}: the workspace uid cannot traverse to {self.root}")
                continue
            try:
                result = self.run([self.python, "-c", "print('ok')"], self._probe_id, 10, mode=mode)
            except (OSError, SandboxError) as exc:
                self.notes.append(f"{mode}: {exc}")
                continue
            if result.exit_code == 0 and result.stdout.strip() == "ok":
                return mode
            self.notes.append(f"{mode}: probe failed ({result.exit_code}): {result.stderr.strip()[:300]}")
        return "rlimits"

    def _check_python(self, mode: str) -> None:
        try:
            result = self.run([self.python, "-c", "print('ok')"], self._probe_id, 10, mode=mode)
            ok = result.exit_code == 0
        except (OSError, SandboxError):
            ok = False
        if not ok:
            self.notes.append(
                f"{mode}: the sandbox uid cannot run {self.python}; run_python will fail until "
                "MEMENTO_CODE_PYTHON names an interpreter it can read (e.g. /usr/bin/python3)"
            )

    def _traversable(self) -> bool:
        if not self.is_root:
            return True
        path = self.root
        while True:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
            if path.parent == path:
                return True
            path = path.parent

    def info(self) -> dict[str, Any]:
        """What this sandbox enforces here, and what it does not."""
        ns = self.mode in ("namespaces", "userns")
        return {
            "isolation": self.mode,
            "requested": self.requested,
            "workspace_root": str(self.root),
            "runs_as": "per-workspace unprivileged uid" if (self.is_root) else f"uid {os.getuid()} (caller)",
            "network": "none (empty network namespace)" if ns else "NOT blocked",
            "filesystem": (
                "only the system folders and the interpreter (read-only) and the workspace; "
                "no project folder, home folders or other workspaces"
                if ns
                else "file permissions only" + (" (unprivileged uid)" if self.is_root else "")
            ),
            "workspaces": "belong to the session that created them; removed when it ends or "
            f"after {self.idle_s:g}s idle",
            "disk_quota": (
                f"{self.limits.disk_mb} MB / {self.limits.max_files} files per workspace, "
                + (
                    "a size-limited tmpfs (hard limit)"
                    if self.quota == "tmpfs"
                    else "checked before each write and every 0.1 s during a run (a run may "
                    "overshoot by what it writes in 0.1 s; no file outgrows what was left at its start)"
                )
            ),
            "processes": "own PID namespace; everything is killed when the command ends"
            if ns
            else "own process group, killed on timeout",
            "environment": "scrubbed: PATH, LANG, HOME=workspace, TMPDIR=workspace/tmp",
            "limits": asdict(self.limits),
            "notes": list(self.notes),
        }

    # -- workspaces: ownership, uids, quota, expiry ----------------------------------------------

    @contextlib.contextmanager
    def _registry(self):
        """The workspace registry, locked against this process's threads and other processes."""
        with self._lock:
            fd = os.open(self.root / REGISTRY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    data = json.loads((self.root / REGISTRY).read_text(encoding="utf-8"))
                except (FileNotFoundError, ValueError):
                    data = {}
                yield data
                tmp = self.root / f"{REGISTRY}.{os.getpid()}.tmp"
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                with os.fdopen(out, "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                os.replace(tmp, self.root / REGISTRY)
            finally:
                os.close(fd)

    def _owner_key(self, owner: str | None) -> str:
        return f"{self._me[0]}:{self._me[1]}:{owner or ''}"

    def _alive(self, entry: dict[str, Any]) -> bool:
        """Whether the session that owns a workspace can still use it."""
        pid, start, token = entry["owner"].split(":", 2)
        if (int(pid), start) == self._me:
            return token not in self._dead_owners
        return _process_start(int(pid)) == start

    def forget_owner(self, owner: str) -> None:
        """An owner (session) has ended: its workspaces go at the next sweep."""
        self._dead_owners.add(owner)

    def _check_id(self, workspace_id: str) -> None:
        if not WORKSPACE_ID.fullmatch(workspace_id or "") or workspace_id.startswith("."):
            raise SandboxError(
                f"workspace id {workspace_id!r} must be 1-64 characters of letters, digits, '.', "
                "'_' or '-', not starting with '.'"
            )

    def workspace(
        self,
        workspace_id: str,
        mode: str | None = None,
        owner: str | None = None,
        busy_s: float = 0.0,
    ) -> Path:
        """The folder of a workspace, created on first use for ``owner`` (None: this process).

        ``busy_s`` marks it in use for that long (a command's timeout), so no sweep, from this
        process or another, removes it under a running command.

        Raises:
            SandboxError: a bad id, or a workspace that belongs to another live owner.

        """
        self._check_id(workspace_id)
        key = self._owner_key(owner)
        with self._registry() as registry:
            self._sweep(registry)
            entry = registry.get(workspace_id)
            if entry is not None and entry["owner"] != key:
                if self._alive(entry):
                    raise SandboxError(
                        f"workspace {workspace_id!r} belongs to another session; omit `workspace` "
                        "to use this session's own"
                    )
                self._remove(workspace_id, entry)
                del registry[workspace_id]
                entry = None
            if entry is None:
                mine = sum(1 for e in registry.values() if isinstance(e, dict) and e["owner"] == key)
                if owner is not None and mine >= self.max_workspaces:
                    raise SandboxError(
                        f"this session already has {mine} workspaces, the limit "
                        "(MEMENTO_CODE_MAX_WORKSPACES); reuse one of them"
                    )
                entry = self._create(workspace_id, registry, key)
                registry[workspace_id] = entry
            entry["last_used"] = time.time()
            if busy_s:
                entry["busy_until"] = time.time() + busy_s + 5
            self._uids[workspace_id] = entry.get("uid")
        path = self.root / workspace_id
        if self.is_root:
            # In a user namespace only the caller's own uid is mapped: the files stay the caller's.
            run_as = self.run_uid(workspace_id, mode) or 0
            for p in (path, path / "tmp"):
                if os.lstat(p).st_uid != run_as:
                    os.lchown(p, run_as, run_as)
        return path

    def _create(self, workspace_id: str, registry: dict[str, Any], key: str) -> dict[str, Any]:
        path = self.root / workspace_id
        if os.path.lexists(path):
            # Left by an older server or a dead owner: it may hold someone else's files. Only what
            # looks like a workspace is wiped, in case the root was pointed at a folder in use.
            if not path.is_dir() or path.is_symlink() or not ((path / "tmp").is_dir() or not any(path.iterdir())):
                raise SandboxError(f"{path} exists and is not a workspace: choose another workspace id")
            self._wipe(path)
        uid = self._allocate_uid(registry) if self.is_root else None
        path.mkdir(mode=0o700)
        tmpfs = False
        if self.quota == "tmpfs":
            options = (
                f"size={self.limits.disk_mb}m,nr_inodes={self.limits.max_files + 16},"
                f"mode=700,uid={uid or 0},gid={uid or 0}"
            )
            _mount("tmpfs", str(path), "tmpfs", MS_NOSUID | MS_NODEV, options)
            tmpfs = True
        (path / "tmp").mkdir(mode=0o755)
        if uid is not None:
            for p in (path, path / "tmp"):
                os.lchown(p, uid, uid)
        os.chmod(path, 0o700)
        return {"owner": key, "uid": uid, "tmpfs": tmpfs, "created": time.time()}

    def _allocate_uid(self, registry: dict[str, Any]) -> int:
        """A uid no workspace, account, process or leftover file in the root holds right now."""
        taken = {e.get("uid") for e in registry.values() if isinstance(e, dict)}
        taken |= _uids_in_use()
        with contextlib.suppress(OSError), os.scandir(self.root) as entries:
            taken |= {e.stat(follow_symlinks=False).st_uid for e in entries}
        # Handed out in turn (not lowest-free), so a freed uid is reused as late as possible.
        start = int(registry.get(".next_uid", UID_BASE))
        for offset in range(UID_SPAN):
            uid = UID_BASE + (start - UID_BASE + offset) % UID_SPAN
            if uid in taken:
                continue
            try:
                pwd.getpwuid(uid)
                continue
            except KeyError:
                registry[".next_uid"] = uid + 1
                return uid
        raise SandboxError("no free workspace uid: too many workspaces at once")

    def _remove(self, workspace_id: str, entry: dict[str, Any]) -> None:
        path = self.root / workspace_id
        if entry.get("tmpfs") and self._owner_key(None).rsplit(":", 1)[0] == entry["owner"].rsplit(":", 1)[0]:
            _libc().umount2(str(path).encode(), MNT_DETACH)
        self._wipe(path)
        self._uids.pop(workspace_id, None)

    def _wipe(self, path: Path) -> None:
        if os.path.islink(path) or not os.path.isdir(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        shutil.rmtree(path, ignore_errors=True)

    def _sweep(self, registry: dict[str, Any]) -> list[str]:
        """Remove workspaces idle longer than ``idle_s`` or whose owner has ended."""
        now = time.time()
        removed = []
        for workspace_id, entry in list(registry.items()):
            if not isinstance(entry, dict) or self._busy.get(workspace_id):
                continue
            if entry.get("busy_until", 0) > now and self._alive(entry):
                continue
            if now - entry.get("last_used", 0) > self.idle_s or not self._alive(entry):
                self._remove(workspace_id, entry)
                del registry[workspace_id]
                removed.append(workspace_id)
        return removed

    def sweep(self) -> list[str]:
        """Remove idle and orphaned workspaces now; returns their ids."""
        with self._registry() as registry:
            return self._sweep(registry)

    def start_janitor(self) -> threading.Thread:
        """A daemon thread that sweeps every ``min(60, idle_s / 4)`` seconds."""

        def loop() -> None:
            while True:
                time.sleep(min(60.0, self.idle_s / 4))
                with contextlib.suppress(Exception):  # a failed sweep is retried next time
                    self.sweep()

        thread = threading.Thread(target=loop, name="sandbox-janitor", daemon=True)
        thread.start()
        return thread

    def run_uid(self, workspace_id: str, mode: str | None = None) -> int | None:
        """The uid commands switch to, or None when they keep the caller's."""
        # In a user namespace only the caller's own uid is mapped: there is no other to switch to.
        if not self.is_root or (mode or self.mode) == "userns":
            return None
        if workspace_id not in self._uids:
            with self._registry() as registry:
                self._uids[workspace_id] = (registry.get(workspace_id) or {}).get("uid")
        return self._uids[workspace_id]

    def _grew_past(self, workspace: Path, max_bytes: int, max_files: int) -> bool:
        used, count = disk_usage(workspace, max_files)
        return used > max_bytes or count > max_files

    def quota_left(self, workspace: Path) -> int:
        """Bytes the workspace may still grow by (check mode; tmpfs enforces its own size)."""
        used, count = disk_usage(workspace, self.limits.max_files)
        if count > self.limits.max_files:
            return 0
        return max(0, self.limits.disk_mb * 1024 * 1024 - used)

    def env_for(self, workspace: Path) -> dict[str, str]:
        """The whole environment a command sees: nothing of the server's own."""
        bindir = os.path.dirname(self.python)
        return {
            "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(workspace),
            "TMPDIR": str(workspace / "tmp"),
        }

    def _python_folders(self) -> set[str]:
        """Folders the interpreter needs: its prefix, a venv's base interpreter, site-packages."""
        folders = set()
        pythons = {self.python, os.path.realpath(self.python)}
        if os.path.realpath(self.python) == os.path.realpath(sys.executable):
            folders |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        for python in list(pythons):
            prefix = os.path.dirname(os.path.dirname(python))
            folders.add(prefix)
            cfg = os.path.join(prefix, "pyvenv.cfg")
            if os.path.isfile(cfg):
                with open(cfg, encoding="utf-8") as fh:
                    for line in fh:
                        key, _, value = line.partition("=")
                        if key.strip() == "home" and value.strip():
                            home = value.strip()
                            folders |= {os.path.dirname(home), os.path.dirname(os.path.realpath(home))}
        return {os.path.normpath(f) for f in folders}

    def view(self) -> dict[str, Any]:
        """What the namespaced command sees: read-only folders, top-level links, masked secrets."""
        ro: list[str] = []
        links: dict[str, str] = {}
        for top in SYSTEM_DIRS:
            if os.path.islink(top):
                target = os.readlink(top)
                links[top] = target
                real = os.path.realpath(top)
                if not any(real == d or real.startswith(d + "/") for d in SYSTEM_DIRS):
                    ro.append(real)
            elif os.path.isdir(top):
                ro.append(top)
        extra = [p for p in os.environ.get("MEMENTO_CODE_RO_PATHS", "").split(os.pathsep) if p]
        covered = tuple(d + "/" for d in ro)
        for folder in sorted(self._python_folders()) + [os.path.abspath(p) for p in extra]:
            if folder in ro or folder.startswith(covered):
                continue  # e.g. /usr/bin/python3: its prefix is already there
            # A prefix of "/" or a bare top-level folder (/root, /home) would expose far too much.
            if folder.count("/") < 2 and folder not in extra:
                self.notes.append(f"not exposing {folder} to the sandbox (too broad)")
                continue
            for path in {folder, os.path.realpath(folder)}:
                if os.path.isdir(path) and path not in ro and not path.startswith(covered):
                    ro.append(path)
        return {"ro": ro, "links": links, "mask": list(MASKED_SECRETS)}

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        workspace_id: str,
        timeout_s: float,
        *,
        mode: str | None = None,
        owner: str | None = None,
    ) -> RunResult:
        """Run ``argv`` in a workspace under the limits; never raises for what the command does.

        Args:
            argv: Program and arguments (the program is looked up on the sandbox PATH).
            workspace_id: Which workspace to run in (created if new).
            timeout_s: Wall-clock seconds before the whole command is killed.
            mode: Isolation level override (used by the probe).
            owner: The session the workspace belongs to (None: this process).

        """
        mode = mode or self.mode
        timeout_s = float(timeout_s)
        if not 0 < timeout_s <= self.limits.max_timeout_s:
            raise SandboxError(f"timeout_s must be in (0, {self.limits.max_timeout_s:g}], got {timeout_s:g}")
        workspace = self.workspace(workspace_id, mode, owner, busy_s=timeout_s)
        with self._lock:
            self._busy[workspace_id] = self._busy.get(workspace_id, 0) + 1
        try:
            return self._run(argv, workspace_id, workspace, timeout_s, mode)
        finally:
            with self._lock:
                self._busy[workspace_id] -= 1
                if not self._busy[workspace_id]:
                    del self._busy[workspace_id]
                    with contextlib.suppress(OSError, SandboxError), self._registry() as registry:
                        if workspace_id in registry:
                            registry[workspace_id]["last_used"] = time.time()
                            registry[workspace_id].pop("busy_until", None)

    def _run(self, argv: list[str], workspace_id: str, workspace: Path, timeout_s: float, mode: str) -> RunResult:
        env = self.env_for(workspace)
        program = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0], path=env["PATH"])
        if program is None:
            raise SandboxError(f"program {argv[0]!r} not found on the sandbox PATH")
        argv = [program, *argv[1:]]
        limits = {**asdict(self.limits), "cpu_s": max(1, int(timeout_s + 0.999) + 1)}
        # Without a tmpfs of its own the quota is checked: no single file may outgrow what is left,
        # and the run is watched and killed once the workspace is over quota.
        watch = self.quota == "check"
        if watch:
            quota = self.limits.disk_mb * 1024 * 1024
            used, files = disk_usage(workspace, self.limits.max_files)
            limits["file_size_bytes"] = min(self.limits.file_size_mb * 1024 * 1024, max(0, quota - used))
            # A run that starts over quota (e.g. to delete files) is killed only if it grows further.
            ceiling = (max(quota, used), max(self.limits.max_files, files))
        uid = self.run_uid(workspace_id, mode)
        if mode in ("namespaces", "userns"):
            spec = {
                "workspace": str(workspace),
                "argv": argv,
                "env": env,
                "uid": uid if mode == "namespaces" else None,
                "gid": uid if mode == "namespaces" else None,
                "limits": limits,
                "new_root": str(self.root),
                **self._view,
            }
            cmd = [
                *self._unshare_argv(user=mode == "userns"),
                sys.executable,
                "-I",
                "-S",
                str(Path(__file__).resolve()),
                "--init",
                json.dumps(spec),
            ]
            preexec = None
            cwd = None
            popen_env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
        else:
            cmd = argv
            cwd = str(workspace)
            popen_env = env

            def preexec() -> None:
                _become(uid, uid, limits)

        started = time.monotonic()
        # A new session, so a timeout can kill the whole process group at once.
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=popen_env,
                preexec_fn=preexec,
                start_new_session=preexec is None,
                close_fds=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start {cmd[0]} in the sandbox ({mode}): {exc}") from exc
        cap = self.limits.output_chars * 4 + 4096
        out, err = _Capture(proc.stdout, cap), _Capture(proc.stderr, cap)
        timed_out = over_quota = False
        deadline = started + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(0.0, min(left, 0.1) if watch else left))
                break
            except subprocess.TimeoutExpired:
                timed_out = time.monotonic() >= deadline
                over_quota = not timed_out and watch and self._grew_past(workspace, *ceiling)
                if timed_out or over_quota:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.kill()
                    proc.wait()
                    break
        # Whatever the command left running in its group goes with it (the PID namespace does
        # this by itself).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Grandchildren that escaped the group could hold the pipes open: do not wait for them.
        for capture in (out, err):
            capture.thread.join(timeout=2.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:  # both are pipes here; the check is for the type checker
                stream.close()
        duration = time.monotonic() - started
        code = proc.returncode
        killed_by = None
        if code is not None and code < 0:
            killed_by = _signal_name(-code)
        elif mode in ("namespaces", "userns") and code is not None and code > 128:
            killed_by = _signal_name(code - 128)
        stdout, cut_out = out.text(self.limits.output_chars)
        stderr, cut_err = err.text(self.limits.output_chars)
        notes = []
        if timed_out:
            notes.append(f"killed after the {timeout_s:g}s wall-clock timeout")
            killed_by = "SIGKILL"
        elif over_quota:
            killed_by = "SIGKILL"
        elif killed_by == "SIGXCPU" or (killed_by == "SIGKILL" and duration >= limits["cpu_s"] - 0.5):
            notes.append(f"CPU time limit ({limits['cpu_s']}s) reached")
        elif killed_by == "SIGXFSZ":
            notes.append(f"file size limit ({self.limits.file_size_mb} MB) reached")
        if watch and not over_quota and not timed_out:
            # A run that wrote past the quota between two checks and exited before the next one was
            # not killed, but is over quota all the same: say so (its next write is refused).
            over_quota = self._grew_past(workspace, *ceiling)
        if self.quota == "tmpfs" and not over_quota:
            # The program may have caught ENOSPC itself: say why its writes failed anyway.
            with contextlib.suppress(OSError):
                fs = os.statvfs(workspace)
                over_quota = fs.f_bavail * fs.f_frsize < 65536 or fs.f_favail == 0
        if (
            over_quota
            or "No space left on device" in stderr
            or (watch and killed_by == "SIGXFSZ" and limits["file_size_bytes"] < self.limits.file_size_mb << 20)
        ):
            notes.append(f"workspace disk quota ({self.limits.disk_mb} MB, {self.limits.max_files} files) reached")
        if "MemoryError" in stderr:
            notes.append(f"memory limit ({self.limits.memory_mb} MB address space) reached")
        if "Resource temporarily unavailable" in stderr or "BlockingIOError" in stderr:
            notes.append(f"process limit ({self.limits.nproc}) reached")
        return RunResult(
            exit_code=None if timed_out else code,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            killed_by=killed_by,
            truncated=cut_out or cut_err,
            duration_s=round(duration, 3),
            isolation=mode,
            notes=notes,
        )

    # -- files -----------------------------------------------------------------------------------

    def resolve(self, workspace_id: str, path: str, owner: str | None = None) -> tuple[Path, Path]:
        """Confine ``path`` to a workspace; returns (workspace, resolved path inside it).

        Raises:
            SandboxError: ``..`` components, or a path (after resolving symlinks) outside.

        """
        workspace = self.workspace(workspace_id, owner=owner)
        if "\x00" in path:
            raise SandboxError("path contains a NUL byte")
        raw = Path(path or ".")
        if ".." in raw.parts:
            raise SandboxError(f"path {path!r} must not contain '..'")
        real_ws = os.path.realpath(workspace)
        real = os.path.realpath(raw if raw.is_absolute() else workspace / raw)
        if os.path.commonpath([real, real_ws]) != real_ws:
            raise SandboxError(f"path {path!r} resolves outside the workspace")
        return workspace, Path(real)

    def _walk_open(self, workspace: Path, target: Path, flags: int, mode: int = 0o644, make_dirs: bool = False) -> int:
        """Open ``target`` one component at a time with O_NOFOLLOW.

        A symlink swapped in after `resolve` checked the path then cannot redirect the open
        outside the workspace.
        """
        rel = target.relative_to(os.path.realpath(workspace)).parts
        if not rel:
            raise SandboxError("path names the workspace itself, not a file")
        fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for part in rel[:-1]:
                if make_dirs:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                        if self.is_root:
                            os.chown(
                                part,
                                *(self._owner(workspace),) * 2,
                                dir_fd=fd,
                                follow_symlinks=False,
                            )
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
            return os.open(rel[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)
        finally:
            os.close(fd)

    def _owner(self, workspace: Path) -> int:
        return os.stat(workspace).st_uid

    def write_file(
        self,
        workspace_id: str,
        path: str,
        content: str,
        max_bytes: int | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Write a text file inside a workspace (parents created)."""
        data = content.encode("utf-8")
        limit = max_bytes or self.limits.file_size_mb * 1024 * 1024
        if len(data) > limit:
            raise SandboxError(f"content is {len(data)} bytes, over the {limit}-byte limit")
        workspace, target = self.resolve(workspace_id, path, owner)
        if self.quota == "check":
            replaced = os.lstat(target).st_size if os.path.isfile(target) else 0
            if len(data) - replaced > self.quota_left(workspace):
                raise SandboxError(
                    f"workspace disk quota ({self.limits.disk_mb} MB, {self.limits.max_files} "
                    "files) reached: delete files first"
                )
        try:
            fd = self._walk_open(workspace, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, make_dirs=True)
            with os.fdopen(fd, "wb") as fh:
                if self.is_root:
                    os.fchown(fh.fileno(), self._owner(workspace), self._owner(workspace))
                fh.write(data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise SandboxError(
                    f"workspace disk quota ({self.limits.disk_mb} MB) reached: delete files first"
                ) from exc
            raise SandboxError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
        return {"path": str(target.relative_to(os.path.realpath(workspace))), "bytes": len(data)}

    def read_file(
        self, workspace_id: str, path: str, max_chars: int = 100_000, owner: str | None = None
    ) -> dict[str, Any]:
        """Read a text file inside a workspace (undecodable bytes replaced, long files cut)."""
        workspace, target = self.resolve(workspace_id, path, owner)
        try:
            fd = self._walk_open(workspace, target, os.O_RDONLY)
        except OSError as exc:
            raise SandboxError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SandboxError(f"{path!r} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(max_chars * 4 + 4)
        text = raw.decode("utf-8", errors="replace")
        truncated = len(text) > max_chars
        return {
            "path": str(target.relative_to(os.path.realpath(workspace))),
            "content": text[:max_chars],
            "truncated": truncated,
        }

    def list_files(
        self, workspace_id: str, path: str = ".", max_entries: int = 500, owner: str | None = None
    ) -> dict[str, Any]:
        """Entries of a folder inside a workspace (recursive, at most ``max_entries``)."""
        workspace, target = self.resolve(workspace_id, path, owner)
        real_ws = Path(os.path.realpath(workspace))
        if not target.is_dir():
            raise SandboxError(f"{path!r} is not a folder in the workspace")
        entries = []
        truncated = False
        for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
            dirnames.sort()
            if Path(dirpath) == real_ws and "tmp" in dirnames:
                dirnames.remove("tmp")
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(dirpath) / name
                st = os.lstat(full)
                kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
                entries.append({"path": str(full.relative_to(real_ws)), "type": kind, "size": st.st_size})
                if len(entries) >= max_entries:
                    truncated = True
                    break
            if truncated:
                break
        return {
            "path": str(target.relative_to(real_ws)) or ".",
            "entries": entries,
            "truncated": truncated,
        }


if __name__ == "__main__" and sys.argv[1:2] == ["--init"]:
    sys.exit(_init_main(sys.argv[2]))
