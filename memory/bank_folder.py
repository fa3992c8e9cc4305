"""The case bank's folder: its layout, the checks that refuse a folder that is not a bank, and errors.

A folder that would silently open as an empty bank (a file, a stranger's folder, a bank that lost
its data file) is refused here with a message that says how to recover.
"""

from __future__ import annotations

import re
from pathlib import Path

COLLECTION_PREFIX = "cases__"
MANIFEST = "memento-bank.json"
GENERATION = ".generation"
LOCK_FILE = ".write.lock"
SQLITE_FILE = "chroma.sqlite3"
BANK_FORMAT = 1

RECOVERY = (
    "To recover, move the folder aside and re-import your last export (`memento memory import <file> --bank {path}`)."
)


class BankError(RuntimeError):
    """The bank cannot be opened or written; the message says where and how to recover."""


def damage_error(location: str, exc: BaseException) -> BankError:
    """A Chroma internal error as one message naming the bank and how to recover it."""
    detail = " ".join(str(exc).split())[:300]
    if "malformed" in detail or "not a database" in detail:
        return BankError(
            f"the case bank data file {location}/{SQLITE_FILE} is damaged ({detail}). " + RECOVERY.format(path=location)
        )
    return BankError(
        f"the case bank at {location} is damaged ({detail}). Rebuild its index from the stored cases with "
        f"`memento memory repair --bank {location}`; if that fails, move the folder aside and re-import "
        f"your last export (`memento memory import <file> --bank {location}`)."
    )


def check_folder(path: Path, create: bool) -> None:
    """Refuse folders that would silently open as an empty bank."""
    sqlite = path / SQLITE_FILE
    if path.exists() and not path.is_dir():
        raise BankError(f"the case bank path {path} is a file, not a folder; pass a folder path")
    if not path.exists():
        if not create:
            raise BankError(
                f"no case bank at {path}: create one with `memento memory import <file> --bank {path}` "
                "or by running `memento ask`, or point MEMENTO_BANK_PATH at an existing bank."
            )
        return
    entries = {p.name for p in path.iterdir()}
    has_manifest = MANIFEST in entries
    segment_dirs = [e for e in entries if re.fullmatch(r"[0-9a-f-]{36}", e)]
    if SQLITE_FILE not in entries:
        if has_manifest or segment_dirs:
            raise BankError(
                f"the case bank at {path} has lost its data file {SQLITE_FILE}. " + RECOVERY.format(path=path)
            )
        if not create:
            raise BankError(f"{path} is not a case bank (no {SQLITE_FILE}); pass the bank folder")
        # Lock, holder record (and its temporary file while a concurrent creator writes it) and
        # generation stamp are ours: a bank another process is creating right now is not "foreign".
        foreign = {e for e in entries if not e.startswith(LOCK_FILE) and e != GENERATION}
        if foreign:
            raise BankError(f"{path} is not empty and is not a case bank; pick an empty or new folder for the bank")
        return
    if sqlite.stat().st_size == 0 and (has_manifest or segment_dirs):
        raise BankError(f"the case bank data file {sqlite} is empty (truncated). " + RECOVERY.format(path=path))
    if sqlite.stat().st_size:
        with open(sqlite, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                raise BankError(
                    f"the case bank data file {sqlite} is not a SQLite database (corrupt). "
                    + RECOVERY.format(path=path)
                )
