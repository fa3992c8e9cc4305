"""Run untrusted Python and shell commands in a per-run workspace, as isolated as the OS allows.

Isolation levels, strongest first (probed once, reported by `Sandbox.info`):

``namespaces`` (running as root, ``unshare`` works)
    New mount, network, PID, IPC and UTS namespaces. Inside, every mount is remounted read-only
    except the workspace, ``/root`` and ``/home`` are hidden (unless the interpreter lives there),
    ``/dev/shm`` is a small private tmpfs, and the command runs as a per-workspace unprivileged uid
    with no capabilities and ``no_new_privs``. No network (only a down loopback). When the command
    ends or is killed, the PID namespace takes every process it started with it.
``userns`` (not root, unprivileged user namespaces allowed)
    The same namespaces inside a user namespace; the command keeps the caller's real uid outside,
    so files the caller can write outside the workspace are protected only by the read-only mounts,
    and all capabilities are dropped before the command starts.
``rlimits`` (fallback)
    A scrubbed environment, resource limits and a process group that is killed on timeout; when
    running as root the command still drops to the workspace uid. Network is NOT blocked and
    writes are stopped by file permissions only.

Every level applies the same resource limits (``setrlimit``: CPU seconds, address space, file
size, processes) and a wall-clock timeout, and caps the output it keeps. RLIMIT_NPROC counts the
processes of a real uid and does not bind root, which is why the command never runs as root.

This module imports only the standard library: it is also the PID-1 init of the namespaces,
started as ``python -I -S sandbox.py --init SPEC``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
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
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WORKSPACE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Unprivileged uids for workspaces: far above normal accounts, one per workspace, so a fork bomb
# in one workspace cannot eat another workspace's process budget.
UID_BASE = 200_000
UID_SPAN = 50_000


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

    """

    memory_mb: int = 1024
    nproc: int = 64
    file_size_mb: int = 64
    open_files: int = 256
    output_chars: int = 20_000
    max_timeout_s: float = 120.0

    @classmethod
    def from_env(cls) -> Limits:
        """Limits from ``MEMENTO_CODE_*`` environment variables, defaults otherwise."""
        env = os.environ
        return cls(
            memory_mb=int(env.get("MEMENTO_CODE_MEMORY_MB", cls.memory_mb)),
            nproc=int(env.get("MEMENTO_CODE_NPROC", cls.nproc)),
            file_size_mb=int(env.get("MEMENTO_CODE_FILE_SIZE_MB", cls.file_size_mb)),
            open_files=int(env.get("MEMENTO_CODE_OPEN_FILES", cls.open_files)),
            output_chars=int(env.get("MEMENTO_CODE_OUTPUT_CHARS", cls.output_chars)),
            max_timeout_s=float(env.get("MEMENTO_CODE_MAX_TIMEOUT_S", cls.max_timeout_s)),
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
    # Loaded once in the parent, so a forked child never runs the dynamic loader.
    return ctypes.CDLL(None, use_errno=True)


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
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
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_mb"] * mb,) * 2)
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


def _hide(hidden: str, expose: list[str]) -> None:
    """Cover ``hidden`` with an empty tmpfs, re-exposing the folders under it the command needs.

    The re-exposed folders (e.g. a Python installed under /root) are bound read-only.
    """
    # O_PATH descriptors keep the real folders reachable once the tmpfs covers them.
    fds = {
        path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in expose if os.path.isdir(path)
    }
    _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
    for path, fd in fds.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.close(fd)
    _mount(None, hidden, None, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_RDONLY)


def _init_main(spec_json: str) -> int:
    """PID 1 of the sandbox: lock the filesystem down, start the command, reap, exit with it."""
    spec = json.loads(spec_json)
    workspace = spec["workspace"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Own mount for the workspace so the read-only pass below leaves it writable.
    _mount(workspace, workspace, None, MS_BIND | MS_REC)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    keep = {workspace, "/proc"}
    for point, flags in _mountinfo():
        if point in keep or point.startswith(workspace + "/") or point.startswith("/proc/"):
            continue
        with contextlib.suppress(OSError):  # e.g. mounts covered by a later mount
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    for hidden, expose in spec.get("hide", {}).items():
        if os.path.isdir(hidden):
            _hide(hidden, expose)
    if os.path.isdir("/dev/shm") and not workspace.startswith("/dev/shm"):
        with contextlib.suppress(OSError):
            _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
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
            text = (
                text[:chars]
                + f"\n[... output truncated: {self.total} bytes in all, first {chars} characters kept]"
            )
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
        root = (
            root
            or os.environ.get("MEMENTO_CODE_WORKSPACE_ROOT")
            or os.path.join(tempfile.gettempdir(), "memento-code")
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
            raise SandboxError(
                f"unknown sandbox mode {self.requested!r}: use auto, namespaces, userns or rlimits"
            )
        self.python = os.environ.get("MEMENTO_CODE_PYTHON") or sys.executable
        self.notes: list[str] = []
        _libc()
        self.mode = "rlimits"  # until the probe has found the strongest level that works
        self.mode = self._probe()

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
                result = self.run([self.python, "-c", "print('ok')"], "_probe", 10, mode=mode)
            except (OSError, SandboxError) as exc:
                self.notes.append(f"{mode}: {exc}")
                continue
            if result.exit_code == 0 and result.stdout.strip() == "ok":
                return mode
            self.notes.append(
                f"{mode}: probe failed ({result.exit_code}): {result.stderr.strip()[:300]}"
            )
        return "rlimits"

    def _check_python(self, mode: str) -> None:
        try:
            result = self.run([self.python, "-c", "print('ok')"], "_probe", 10, mode=mode)
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
            "runs_as": "per-workspace unprivileged uid"
            if (self.is_root)
            else f"uid {os.getuid()} (caller)",
            "network": "none (empty network namespace)" if ns else "NOT blocked",
            "filesystem": (
                "read-only except the workspace; /root and /home hidden"
                if ns
                else "file permissions only" + (" (unprivileged uid)" if self.is_root else "")
            ),
            "processes": "own PID namespace; everything is killed when the command ends"
            if ns
            else "own process group, killed on timeout",
            "environment": "scrubbed: PATH, LANG, HOME=workspace, TMPDIR=workspace/tmp",
            "limits": asdict(self.limits),
            "notes": list(self.notes),
        }

    def workspace(self, workspace_id: str, mode: str | None = None) -> Path:
        """The folder of a workspace, created on first use (owned by the uid its commands run as)."""
        if not WORKSPACE_ID.fullmatch(workspace_id or "") or workspace_id in (".", ".."):
            raise SandboxError(
                f"workspace id {workspace_id!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            )
        path = self.root / workspace_id
        (path / "tmp").mkdir(parents=True, exist_ok=True)
        if self.is_root:
            owner = self.run_uid(workspace_id, mode) or 0
            for p in (path, path / "tmp"):
                if os.lstat(p).st_uid != owner:
                    os.lchown(p, owner, owner)
            os.chmod(path, 0o700)
        return path

    def run_uid(self, workspace_id: str, mode: str | None = None) -> int | None:
        """The uid commands switch to, or None when they keep the caller's."""
        # In a user namespace only the caller's own uid is mapped: there is no other to switch to.
        if not self.is_root or (mode or self.mode) == "userns":
            return None
        return self.uid_for(workspace_id)

    def uid_for(self, workspace_id: str) -> int:
        """The unprivileged uid a workspace's commands run as (when the server is root)."""
        return UID_BASE + zlib.crc32(workspace_id.encode()) % UID_SPAN

    def env_for(self, workspace: Path) -> dict[str, str]:
        """The whole environment a command sees: nothing of the server's own."""
        bindir = os.path.dirname(self.python)
        return {
            "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(workspace),
            "TMPDIR": str(workspace / "tmp"),
        }

    def _hidden_paths(self, workspace: Path) -> dict[str, list[str]]:
        """Home folders to cover, each with the folders under it the command still needs."""
        needed = {
            os.path.realpath(p)
            for p in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(self.python)))
        }
        hide = {}
        for candidate in ("/root", "/home"):
            if str(workspace) == candidate or str(workspace).startswith(candidate + "/"):
                continue
            hide[candidate] = sorted(
                n for n in needed if n.startswith(candidate + "/") and os.path.isdir(n)
            )
        return hide

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        workspace_id: str,
        timeout_s: float,
        *,
        mode: str | None = None,
    ) -> RunResult:
        """Run ``argv`` in a workspace under the limits; never raises for what the command does.

        Args:
            argv: Program and arguments (the program is looked up on the sandbox PATH).
            workspace_id: Which workspace to run in (created if new).
            timeout_s: Wall-clock seconds before the whole command is killed.
            mode: Isolation level override (used by the probe).

        """
        mode = mode or self.mode
        timeout_s = float(timeout_s)
        if not 0 < timeout_s <= self.limits.max_timeout_s:
            raise SandboxError(
                f"timeout_s must be in (0, {self.limits.max_timeout_s:g}], got {timeout_s:g}"
            )
        workspace = self.workspace(workspace_id, mode)
        env = self.env_for(workspace)
        program = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0], path=env["PATH"])
        if program is None:
            raise SandboxError(f"program {argv[0]!r} not found on the sandbox PATH")
        argv = [program, *argv[1:]]
        limits = {**asdict(self.limits), "cpu_s": max(1, int(timeout_s + 0.999) + 1)}
        uid = self.run_uid(workspace_id, mode)
        if mode in ("namespaces", "userns"):
            spec = {
                "workspace": str(workspace),
                "argv": argv,
                "env": env,
                "uid": uid if mode == "namespaces" else None,
                "gid": uid if mode == "namespaces" else None,
                "limits": limits,
                "hide": self._hidden_paths(workspace),
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
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
        # Whatever the command left running in its group goes with it (the PID namespace does
        # this by itself).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Grandchildren that escaped the group could hold the pipes open: do not wait for them.
        for capture in (out, err):
            capture.thread.join(timeout=2.0)
        for stream in (proc.stdout, proc.stderr):
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
        elif killed_by == "SIGXCPU" or (
            killed_by == "SIGKILL" and duration >= limits["cpu_s"] - 0.5
        ):
            notes.append(f"CPU time limit ({limits['cpu_s']}s) reached")
        elif killed_by == "SIGXFSZ":
            notes.append(f"file size limit ({self.limits.file_size_mb} MB) reached")
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

    def resolve(self, workspace_id: str, path: str) -> tuple[Path, Path]:
        """Confine ``path`` to a workspace; returns (workspace, resolved path inside it).

        Raises:
            SandboxError: ``..`` components, or a path (after resolving symlinks) outside.

        """
        workspace = self.workspace(workspace_id)
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

    def _walk_open(
        self, workspace: Path, target: Path, flags: int, mode: int = 0o644, make_dirs: bool = False
    ) -> int:
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
        self, workspace_id: str, path: str, content: str, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """Write a text file inside a workspace (parents created)."""
        data = content.encode("utf-8")
        limit = max_bytes or self.limits.file_size_mb * 1024 * 1024
        if len(data) > limit:
            raise SandboxError(f"content is {len(data)} bytes, over the {limit}-byte limit")
        workspace, target = self.resolve(workspace_id, path)
        try:
            fd = self._walk_open(
                workspace, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, make_dirs=True
            )
        except OSError as exc:
            raise SandboxError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if self.is_root:
                os.fchown(fh.fileno(), self._owner(workspace), self._owner(workspace))
        return {"path": str(target.relative_to(os.path.realpath(workspace))), "bytes": len(data)}

    def read_file(self, workspace_id: str, path: str, max_chars: int = 100_000) -> dict[str, Any]:
        """Read a text file inside a workspace (undecodable bytes replaced, long files cut)."""
        workspace, target = self.resolve(workspace_id, path)
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
        self, workspace_id: str, path: str = ".", max_entries: int = 500
    ) -> dict[str, Any]:
        """Entries of a folder inside a workspace (recursive, at most ``max_entries``)."""
        workspace, target = self.resolve(workspace_id, path)
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
                kind = (
                    "dir"
                    if stat.S_ISDIR(st.st_mode)
                    else "symlink"
                    if stat.S_ISLNK(st.st_mode)
                    else "file"
                )
                entries.append(
                    {"path": str(full.relative_to(real_ws)), "type": kind, "size": st.st_size}
                )
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
