"""The sandbox itself, level by level: confinement of paths, scrubbed environment, limits, cleanup."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from mcp_servers.sandbox import Limits, Sandbox, SandboxError

LIMITS = Limits(memory_mb=512, nproc=16, output_chars=2000, max_timeout_s=30)


@pytest.fixture(scope="module")
def root():
    # Not tmp_path: pytest's folders are 0700, which the sandbox's unprivileged uid cannot traverse.
    path = tempfile.mkdtemp(prefix="memento-sandbox-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def box(root):
    return Sandbox(root, limits=LIMITS)


def sandbox_at(root: str, mode: str) -> Sandbox:
    box = Sandbox(root, limits=LIMITS, mode=mode)
    if box.mode != mode:
        pytest.skip(f"isolation level {mode!r} does not work here: {box.notes}")
    return box


def gone(pid: int) -> bool:
    """Whether a process has died (a zombie waiting for its reaper counts as dead)."""
    for _ in range(50):  # SIGKILL is delivered asynchronously: allow it a moment
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_paths_are_confined_to_the_workspace(box, root):
    ws = box.workspace("paths")
    os.symlink("/etc", ws / "etc-link")
    os.symlink("/etc/passwd", ws / "passwd-link")
    os.symlink(str(Path(root) / "other"), ws / "sibling-link")
    (ws / "sub").mkdir()
    os.symlink("sub", ws / "inner-link")
    for bad in [
        "..",
        "../paths",
        "sub/../../x",
        "/etc/passwd",
        "etc-link/hostname",
        "passwd-link",
        "sibling-link/f",
        "a\x00b",
    ]:
        with pytest.raises(SandboxError):
            box.resolve("paths", bad)
    assert box.resolve("paths", "sub/new.txt")[1] == Path(os.path.realpath(ws)) / "sub" / "new.txt"
    assert box.resolve("paths", str(ws / "sub"))[1] == Path(os.path.realpath(ws)) / "sub"
    # A link that stays inside is fine for reading and writing.
    assert box.write_file("paths", "inner-link/a.txt", "hi")["path"] == "sub/a.txt"
    assert box.read_file("paths", "sub/a.txt")["content"] == "hi"
    for bad in ["passwd-link", "etc-link/hostname"]:
        with pytest.raises(SandboxError):
            box.read_file("paths", bad)
    with pytest.raises(SandboxError):
        box.write_file("paths", "etc-link/evil", "x")
    with pytest.raises(SandboxError):
        box.list_files("paths", "etc-link")


def test_files_round_trip_and_belong_to_the_command_uid(box):
    box.write_file("files", "a/b/c.txt", "ünïcode\n")
    listed = box.list_files("files")
    assert [e["path"] for e in listed["entries"]] == ["a", "a/b", "a/b/c.txt"]
    assert box.read_file("files", "a/b/c.txt") == {
        "path": "a/b/c.txt",
        "content": "ünïcode\n",
        "truncated": False,
    }
    uid = box.run_uid("files")
    if uid is not None:
        assert os.stat(box.root / "files" / "a" / "b" / "c.txt").st_uid == uid
    with pytest.raises(SandboxError, match="limit"):
        box.write_file("files", "big.txt", "x" * 100, max_bytes=10)
    with pytest.raises(SandboxError, match="not a regular file"):
        box.read_file("files", "a")


@pytest.mark.parametrize("workspace_id", ["", ".", "..", "a/b", "x" * 65, "sp ace", "../etc"])
def test_bad_workspace_ids_are_refused(box, workspace_id):
    with pytest.raises(SandboxError, match="workspace id"):
        box.workspace(workspace_id)


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMENTO_CODE_MEMORY_MB", "256")
    monkeypatch.setenv("MEMENTO_CODE_NPROC", "8")
    monkeypatch.setenv("MEMENTO_CODE_MAX_TIMEOUT_S", "5")
    limits = Limits.from_env()
    assert (limits.memory_mb, limits.nproc, limits.max_timeout_s) == (256, 8, 5.0)


@pytest.mark.parametrize("mode", ["namespaces", "userns", "rlimits"])
def test_every_level_scrubs_env_enforces_timeout_and_cleans_up(root, mode, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-canary")
    box = sandbox_at(root, mode)
    out = box.run(["/bin/sh", "-c", "env; echo $OPENAI_API_KEY"], f"level-{mode}", 5)
    assert out.exit_code == 0 and "sk-secret-canary" not in out.stdout
    assert {line.split("=", 1)[0] for line in out.stdout.split() if "=" in line} <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "PWD",
        "SHLVL",
        "_",
    }
    # A command that outlives its timeout is killed, with everything it started.
    slow = box.run(["/bin/sh", "-c", "sleep 30 & echo $!; wait"], f"level-{mode}", 1)
    assert slow.timed_out and slow.exit_code is None and slow.killed_by == "SIGKILL"
    if mode == "rlimits":
        # Without a PID namespace the group kill must reach the background child itself.
        assert gone(int(slow.stdout.split()[0]))
        left = box.run(["/bin/sh", "-c", "sleep 30 & echo $!"], f"level-{mode}", 5)
        assert gone(int(left.stdout.split()[0]))
    flood = box.run(["/bin/sh", "-c", "yes | head -c 100000"], f"level-{mode}", 5)
    assert flood.truncated and len(flood.stdout) < 2200 and "output truncated" in flood.stdout
    with pytest.raises(SandboxError, match="timeout_s"):
        box.run(["/bin/true"], f"level-{mode}", 31)


@pytest.mark.parametrize("mode", ["namespaces", "userns"])
def test_namespace_levels_block_writes_and_network(root, mode):
    box = sandbox_at(root, mode)
    target = f"/tmp/escape-{uuid.uuid4().hex}"
    out = box.run(
        [
            "/bin/sh",
            "-c",
            f"echo x > {target}; echo x > ok.txt && cat ok.txt; cat /proc/net/dev | grep -c :",
        ],
        f"ns-{mode}",
        5,
    )
    assert not os.path.exists(target) and "Read-only file system" in out.stderr
    lines = out.stdout.split()
    assert lines[0] == "x" and lines[1] == "1"  # only the loopback interface exists
    info = box.info()
    assert info["isolation"] == mode and info["network"].startswith("none")


def test_workspaces_have_owners_and_distinct_uids(box):
    first = box.workspace("owned", owner="alice")
    (first / "secret.txt").write_text("alice's")
    with pytest.raises(SandboxError, match="belongs to another session"):
        box.workspace("owned", owner="bob")
    with pytest.raises(SandboxError, match="belongs to another session"):
        box.read_file("owned", "secret.txt", owner="bob")
    assert box.read_file("owned", "secret.txt", owner="alice")["content"] == "alice's"
    # Once alice's session has ended the name is free again, and nothing of hers is left in it.
    box.forget_owner("alice")
    assert not (box.workspace("owned", owner="bob") / "secret.txt").exists()
    if box.is_root:
        uids = [box.run_uid(box.workspace(w) and w) for w in ("wsx-235", "wsx-254", "wsx-9")]
        assert len(set(uids)) == 3 and all(u >= 200_000 for u in uids), uids


@pytest.mark.parametrize("workspace_id", [".registry.json", ".registry.lock", ".hidden"])
def test_registry_files_cannot_be_named_as_workspaces(box, workspace_id):
    with pytest.raises(SandboxError, match="workspace id"):
        box.workspace(workspace_id)


def test_checked_quota_bounds_a_run_and_write_file(root):
    # This process has no private mount namespace, so the quota is checked rather than a tmpfs.
    box = Sandbox(root, limits=Limits(memory_mb=512, nproc=16, disk_mb=4, max_timeout_s=30))
    assert box.quota == "check" and "checked" in box.info()["disk_quota"]
    # The writes span several checks (a pause after each MB): a run that writes all 16 MB within one
    # check interval may overshoot by design (see the docstring), which says nothing about the watch.
    code = (
        "import os, time\nfor i in range(16):\n    open(f'f{i}', 'wb').write(os.urandom(1 << 20))\n"
        "    time.sleep(0.05)\nprint('all written')"
    )
    out = box.run([box.python, "-c", code], "quota", 20)
    assert "all written" not in out.stdout and any("disk quota" in n for n in out.notes), out
    used = sum(f.stat().st_size for f in (box.root / "quota").iterdir() if f.is_file())
    # Best effort at this level: the run is killed at the next check (every 0.1 s), not at 4 MB.
    assert used < 16 * (1 << 20), used
    with pytest.raises(SandboxError, match="quota"):
        box.write_file("quota", "more.txt", "x" * (2 << 20))


def test_checked_quota_reports_a_run_that_ends_over_quota_between_checks(root):
    box = Sandbox(root, limits=Limits(memory_mb=512, nproc=16, disk_mb=4, max_timeout_s=30))
    # 6 MB in two files, each under what is left, written and done well within one check interval.
    out = box.run(["/bin/sh", "-c", "head -c 3000000 /dev/zero > a; head -c 3000000 /dev/zero > b"], "fast", 20)
    assert any("disk quota" in n for n in out.notes), out
    with pytest.raises(SandboxError, match="quota"):
        box.write_file("fast", "more.txt", "x")


def test_idle_workspaces_are_swept(root, monkeypatch):
    monkeypatch.setenv("MEMENTO_CODE_IDLE_S", "0.5")
    box = Sandbox(root, limits=LIMITS, mode="rlimits")
    path = box.workspace("idle-one")
    time.sleep(0.6)
    assert "idle-one" in box.sweep() and not path.exists()


def test_a_session_has_few_workspaces_and_foreign_folders_are_left_alone(box, monkeypatch):
    monkeypatch.setattr(box, "max_workspaces", 2)
    box.workspace("carol-1", owner="carol")
    box.workspace("carol-2", owner="carol")
    with pytest.raises(SandboxError, match="MEMENTO_CODE_MAX_WORKSPACES"):
        box.workspace("carol-3", owner="carol")
    foreign = box.root / "not-a-workspace"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("someone's data")
    with pytest.raises(SandboxError, match="is not a workspace"):
        box.workspace("not-a-workspace")
    assert (foreign / "keep.txt").read_text() == "someone's data"


def test_a_full_workspace_can_still_compute_and_clean_up(root):
    box = Sandbox(root, limits=Limits(memory_mb=512, nproc=16, disk_mb=1, max_timeout_s=30))
    ws = box.workspace("full")
    (ws / "big.bin").write_bytes(b"x" * (2 << 20))  # already over the 1 MB quota
    slow = box.run(["/bin/sh", "-c", "sleep 0.5; echo still-running"], "full", 5)
    assert slow.stdout.strip() == "still-running" and slow.exit_code == 0, slow
    # File sizes are capped at what was left when the run started: delete first, then write.
    assert box.run(["/bin/sh", "-c", "rm big.bin"], "full", 5).exit_code == 0
    cleaned = box.run(["/bin/sh", "-c", "echo x > small.txt && cat small.txt"], "full", 5)
    assert cleaned.stdout.strip() == "x", cleaned
