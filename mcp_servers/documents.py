"""`documents` MCP server: read local files of many formats as markdown, confined to configured roots.

Formats: PDF (``## Page N``), DOCX (headings, lists, tables), PPTX (``## Slide N``), XLSX and CSV
(one markdown table per sheet under ``## Sheet: name``, row and column limits), HTML (markdownify),
JSON and XML (pretty-printed), plain text, ZIP (a listing only: nothing is extracted, so a zip bomb
costs nothing). Images go to an OpenAI-compatible vision model and audio/video to a transcription
model when configured:

- ``MEMENTO_VISION_MODEL``: model for ``chat.completions`` with an ``image_url`` data URL.
- ``MEMENTO_TRANSCRIBE_MODEL``: model for ``audio.transcriptions``.
- ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``: the endpoint (``MEMENTO_MEDIA_BASE_URL`` /
  ``MEMENTO_MEDIA_API_KEY`` override them for media only).

Reads are confined to ``MEMENTO_DOCUMENTS_ROOTS`` (``os.pathsep``-separated folders; default the
working directory): a path is resolved with ``realpath`` (symlinks followed) and must land inside a
root, so ``../`` tricks, absolute paths elsewhere and symlinks pointing out are refused. Files over
``MEMENTO_DOCUMENTS_MAX_BYTES`` (default 50 MB) are refused.

ZIP-based packages (DOCX, PPTX, XLSX) are checked before any parser sees them: at most
``MEMENTO_DOCUMENTS_MAX_ZIP_MEMBERS`` (10,000) members (counted from the end record, before the
central directory is loaded), at most ``MEMENTO_DOCUMENTS_MAX_UNZIPPED_BYTES`` (100 MB) declared
uncompressed, and no member over 1 MB compressed more than ``MEMENTO_DOCUMENTS_MAX_RATIO`` (200) to 1.
Because a member's declared size can lie, the parser never reads the original archive: each member
is decompressed in 64 KB steps (the standard library stops at the declared size and checks the CRC)
into a stored copy, and the parser reads that copy. DOCX and PPTX conversion stops at ``max_chars``;
a DOCX body over 8 MB is streamed block by block instead of parsed whole.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import mimetypes
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from mcp.server.fastmcp import FastMCP

from mcp_servers.config import ServerConfig
from mcp_servers.serving import run_server

mcp = FastMCP("documents")

MAX_ROWS = 200
MAX_COLS = 30
MAX_CELL_CHARS = 200
MAX_ZIP_ENTRIES = 500
# A member smaller than this is never called a bomb, whatever its ratio (tiny XML parts compress
# very well).
RATIO_FLOOR_BYTES = 1_000_000
# OpenAI's own limits; other compatible servers are usually at least as strict.
MAX_IMAGE_BYTES = 20_000_000
MAX_AUDIO_BYTES = 25_000_000

KINDS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".csv": "csv",
    ".tsv": "csv",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xml": "xml",
    ".zip": "zip",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".gif": "image",
    ".webp": "image",
    ".mp3": "audio",
    ".mpga": "audio",
    ".m4a": "audio",
    ".wav": "audio",
    ".ogg": "audio",
    ".flac": "audio",
    ".mp4": "video",
    ".mpeg": "video",
    ".webm": "video",
    ".mov": "video",
}


class DocumentError(ValueError):
    """A document cannot be read; the message says why."""


# --- confinement --------------------------------------------------------------------------------


def document_roots() -> list[Path]:
    """The folders reads are confined to (``MEMENTO_DOCUMENTS_ROOTS``, default the working directory)."""
    raw = ServerConfig.from_env().documents_roots
    entries = [e for e in raw.split(os.pathsep) if e.strip()] or [os.getcwd()]
    return [Path(os.path.realpath(os.path.expanduser(e.strip()))) for e in entries]


def _inside(path: str, root: Path) -> bool:
    return os.path.commonpath([path, str(root)]) == str(root)


def resolve_path(path: str) -> Path:
    """Resolve a user-supplied path to a real path inside one of the roots.

    Relative paths are taken relative to each root in turn (the first where the file exists wins).

    Raises:
        DocumentError: Empty, outside every root (after following symlinks), or missing.

    """
    if not path or not path.strip():
        raise DocumentError("the path is empty")
    if "\x00" in path:
        raise DocumentError("the path contains a NUL byte")
    roots = document_roots()
    given = Path(os.path.expanduser(path.strip()))
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if not any(_inside(real, root) for root in roots):
            via_link = real != os.path.abspath(candidate)
            hint = (
                " (it is, or passes through, a symlink to outside)"
                if via_link and _is_under_roots_lexically(candidate, roots)
                else ""
            )
            raise DocumentError(
                f"refused: {path!r} is outside the allowed document folders{hint}; "
                f"allowed: {os.pathsep.join(map(str, roots))} (MEMENTO_DOCUMENTS_ROOTS)"
            )
        if os.path.lexists(real):
            return Path(real)
    raise DocumentError(f"no such file: {path!r} (looked in {', '.join(map(str, roots))})")


def _is_under_roots_lexically(candidate: Path, roots: list[Path]) -> bool:
    absolute = os.path.abspath(candidate)
    return any(_inside(absolute, root) for root in roots)


def _display_name(path: Path) -> str:
    for root in document_roots():
        if _inside(str(path), root):
            return str(path.relative_to(root))
    return path.name


# --- helpers ------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime):
        value = value.isoformat(sep=" ", timespec="seconds").removesuffix(" 00:00:00")
    text = " ".join(str(value).split())
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def markdown_table(rows: list[list[Any]]) -> str:
    """A markdown table; the first row is the header. Ragged rows are padded."""
    if not rows:
        return "(empty)"
    width = max(len(r) for r in rows)
    cells = [[_cell(v) for v in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _trim_grid(rows: list[list[Any]]) -> list[list[Any]]:
    """Drop trailing empty rows and columns (spreadsheets often report a larger used range)."""
    rows = [list(r) for r in rows]
    while rows and all(v in (None, "") for v in rows[-1]):
        rows.pop()
    width = max((len(r) for r in rows), default=0)
    while width and all((len(r) < width or r[width - 1] in (None, "")) for r in rows):
        width -= 1
    return [r[:width] for r in rows]


def _table_section(title: str, rows: Iterable[Iterable[Any]], max_rows: int, max_cols: int) -> str:
    kept: list[list[Any]] = []
    total_rows = 0
    total_cols = 0
    for row in rows:
        row = list(row)
        total_rows += 1
        total_cols = max(total_cols, len(row))
        if len(kept) <= max_rows:  # the header plus max_rows data rows
            kept.append(row[:max_cols])
    grid = _trim_grid(kept)
    notes = []
    if total_rows > max_rows + 1:
        notes.append(f"showing the first {max_rows} of {total_rows - 1} data rows")
    if total_cols > max_cols:
        notes.append(f"showing the first {max_cols} of {total_cols} columns")
    note = f"\n\n({'; '.join(notes)})" if notes else ""
    return f"## Sheet: {title}\n\n{markdown_table(grid) if grid else '(empty)'}{note}"


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    import chardet

    guess = chardet.detect(data[:200_000]).get("encoding") or "latin-1"
    return data.decode(guess, errors="replace")


def _read_bytes(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise DocumentError(f"{path.name} is larger than {limit} bytes")
    return data


# --- ZIP-based packages -------------------------------------------------------------------------


def _zip_member_count(path: Path) -> int:
    """Members announced by the end record, read before the whole central directory is."""
    with path.open("rb") as fh:
        end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]  # the stdlib's own reader; public API would load everything
    if end is None:
        raise DocumentError(f"{path.name} is not a readable ZIP package: no end of central directory")
    return int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]  # private, as above


def check_zip(path: Path, kind: str) -> list[zipfile.ZipInfo]:
    """Refuse a ZIP whose member count, declared uncompressed size or ratio is that of a bomb."""
    config = ServerConfig.from_env()
    max_members = config.documents_max_zip_members
    max_total = config.documents_max_unzipped_bytes
    max_ratio = config.documents_max_ratio
    label = kind.upper()
    count = _zip_member_count(path)
    if count > max_members:
        raise DocumentError(
            f"{path.name} has {count} ZIP members, over the {max_members} limit (MEMENTO_DOCUMENTS_MAX_ZIP_MEMBERS)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DocumentError(f"{path.name} is not a readable {label}: {exc}") from None
    if kind == "zip":
        return infos  # listed, never decompressed
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise DocumentError(
            f"{path.name} would decompress to {total} bytes, over the {max_total}-byte limit "
            "(MEMENTO_DOCUMENTS_MAX_UNZIPPED_BYTES); refused as a possible decompression bomb"
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR_BYTES and ratio > max_ratio:
            raise DocumentError(
                f"{path.name}: member {info.filename} is compressed {ratio:.0f}:1, over the {max_ratio}:1 "
                "limit (MEMENTO_DOCUMENTS_MAX_RATIO); refused as a possible decompression bomb"
            )
    return infos


def safe_package(path: Path) -> tempfile.SpooledTemporaryFile:
    """A stored (uncompressed) copy of a checked DOCX/PPTX/XLSX for the parser to read.

    Each member is decompressed in small steps, so a member whose stream is longer than its
    declared size costs at most that size (the standard library stops there and then fails the
    CRC); parsers that read a member in one call would otherwise inflate the whole stream first.
    """
    kind = path.suffix.lower().lstrip(".") or "package"
    infos = check_zip(path, "xlsx" if kind == "xlsm" else kind)
    copy = tempfile.SpooledTemporaryFile(max_size=8_000_000)  # noqa: SIM115 (returned to the parser)
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as dst:
            for info in infos:
                if info.is_dir():
                    continue
                with src.open(info) as member, dst.open(info.filename, "w", force_zip64=info.file_size > 2**31) as out:
                    while chunk := member.read(65536):
                        out.write(chunk)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        copy.close()
        raise DocumentError(f"{path.name} is not a readable {kind.upper()}: {exc}") from None
    copy.seek(0)
    return copy


# --- converters (sync; run in a worker thread) --------------------------------------------------


def pdf_to_markdown(path: Path, max_chars: int) -> str:
    """One ``## Page N`` section per page, with the page's extracted text."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{path.name} is encrypted with a password")
        pages = reader.pages
        parts = [f"PDF, {len(pages)} page{'s' if len(pages) != 1 else ''}"]
        size = 0
        for number, page in enumerate(pages, 1):
            text = (page.extract_text() or "").strip() or "(no extractable text on this page; scanned image?)"
            parts.append(f"## Page {number}\n\n{text}")
            size += len(text)
            # Extraction is the slow part; pages past what will be shown are skipped.
            if size > max_chars:
                if number < len(pages):
                    parts.append(f"(stopped after page {number} of {len(pages)}: output limit reached)")
                break
    except PdfReadError as exc:
        raise DocumentError(f"{path.name} is not a readable PDF: {exc}") from None
    return "\n\n".join(parts)


def _docx_blocks(document):
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            yield Paragraph(child, document)
        elif tag == "tbl":
            yield Table(child, document)


W_NS = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
# A document.xml larger than this is streamed (python-docx would hold its whole tree in memory).
STREAM_DOCX_BYTES = 8_000_000


def _docx_streamed(package: Any, name: str, max_chars: int) -> str:
    """A large DOCX read in one pass, top-level paragraph by paragraph, until ``max_chars``.

    Memory stays at one paragraph or table: each is dropped once converted. Styles come from
    their ids (``Heading1``, ``ListBullet``), which is what Word writes for English templates.
    """
    from lxml import etree

    parts: list[str] = []
    size = 0
    body = W_NS + "body"
    try:
        with zipfile.ZipFile(package) as archive, archive.open("word/document.xml") as xml:
            for _, element in etree.iterparse(xml, events=("end",), tag=(W_NS + "p", W_NS + "tbl")):
                parent = element.getparent()
                if parent is None or parent.tag != body:
                    continue  # inside a table: converted with it
                if element.tag == W_NS + "tbl":
                    rows = [
                        ["".join(t.text or "" for t in cell.iter(W_NS + "t")) for cell in row.iter(W_NS + "tc")]
                        for row in element.iter(W_NS + "tr")
                    ]
                    text = markdown_table(_trim_grid(rows))
                else:
                    text = "".join(t.text or "" for t in element.iter(W_NS + "t")).strip()
                    style = element.find(f"{W_NS}pPr/{W_NS}pStyle")
                    sid = style.get(W_NS + "val", "") if style is not None else ""
                    if text and sid == "Title":
                        text = f"# {text}"
                    elif text and sid.startswith("Heading") and sid[7:].isdigit():
                        text = f"{'#' * min(int(sid[7:]) + 1, 6)} {text}"
                    elif text and sid.startswith("List"):
                        text = f"1. {text}" if sid.startswith("ListNumber") else f"- {text}"
                # What was converted is dropped, so memory holds one block at a time.
                element.clear()
                while element.getprevious() is not None:
                    del parent[0]
                if text:
                    parts.append(text)
                    size += len(text)
                if size > max_chars:
                    parts.append("(stopped here: output limit reached)")
                    break
    except (etree.XMLSyntaxError, KeyError, zipfile.BadZipFile, OSError) as exc:
        raise DocumentError(f"{name} is not a readable DOCX: {exc}") from None
    return "\n\n".join(parts)


def docx_to_markdown(path: Path, max_chars: int) -> str:
    """Paragraphs with headings and list items as markdown, tables as markdown tables, in order."""
    import docx
    from docx.table import Table

    package = safe_package(path)
    with zipfile.ZipFile(package) as archive:
        names = {i.filename: i.file_size for i in archive.infolist()}
    if names.get("word/document.xml", 0) > STREAM_DOCX_BYTES:
        return _docx_streamed(package, path.name, max_chars)
    package.seek(0)
    try:
        document = docx.Document(package)
    except DocumentError:
        raise
    except Exception as exc:  # python-docx raises several unrelated types for a bad package
        raise DocumentError(f"{path.name} is not a readable DOCX: {exc}") from None
    parts: list[str] = []
    size = 0
    for block in _docx_blocks(document):
        # Paragraphs past what will be shown are not converted.
        if size > max_chars:
            parts.append("(stopped here: output limit reached)")
            break
        if isinstance(block, Table):
            rows = [[cell.text for cell in row.cells] for row in block.rows]
            parts.append(markdown_table(_trim_grid(rows)))
            size += len(parts[-1])
            continue
        text = block.text.strip()
        size += len(text)
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        if style == "Title":
            parts.append(f"# {text}")
        elif style.startswith("Heading"):
            level = style.removeprefix("Heading").strip()
            depth = min(int(level) + 1, 6) if level.isdigit() else 2
            parts.append(f"{'#' * depth} {text}")
        elif style.startswith("List"):
            item = f"1. {text}" if style.startswith("List Number") else f"- {text}"
            # Consecutive items form one tight list rather than a list per paragraph.
            if parts and parts[-1].split("\n")[-1].startswith(("- ", "1. ")):
                parts[-1] += "\n" + item
            else:
                parts.append(item)
        else:
            parts.append(text)
    return "\n\n".join(parts)


def pptx_to_markdown(path: Path, max_chars: int) -> str:
    """One ``## Slide N`` section per slide: title, text frames (bullets by level), tables, notes."""
    from pptx import Presentation

    try:
        presentation = Presentation(safe_package(path))
    except DocumentError:
        raise
    except Exception as exc:  # python-pptx raises several unrelated types for a bad package
        raise DocumentError(f"{path.name} is not a readable PPTX: {exc}") from None
    parts: list[str] = []
    size = 0
    for number, slide in enumerate(presentation.slides, 1):
        if size > max_chars:
            parts.append(f"(stopped before slide {number}: output limit reached)")
            break
        lines = [f"## Slide {number}"]
        title_shape = slide.shapes.title
        if title_shape is not None and title_shape.text.strip():
            lines.append(f"### {title_shape.text.strip()}")
        for shape in slide.shapes:
            if shape == title_shape:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                lines.append(markdown_table(_trim_grid(rows)))
            elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                for paragraph in shape.text_frame.paragraphs:
                    text = "".join(run.text for run in paragraph.runs).strip()
                    if text:
                        lines.append(f"{'  ' * paragraph.level}- {text}")
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                lines.append(f"Notes: {notes}")
        parts.append("\n\n".join(lines))
        size += len(parts[-1])
    return "\n\n".join(parts)


def xlsx_to_markdown(path: Path, max_chars: int, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS) -> str:
    """One table per sheet (cached formula values: a file never opened in a spreadsheet app has none)."""
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(safe_package(path), read_only=True, data_only=True)
    except DocumentError:
        raise
    except Exception as exc:  # openpyxl raises several unrelated types for a bad package
        raise DocumentError(f"{path.name} is not a readable XLSX: {exc}") from None
    try:
        return "\n\n".join(
            _table_section(sheet.title, sheet.iter_rows(values_only=True), max_rows, max_cols)
            for sheet in workbook.worksheets
        )
    finally:
        workbook.close()


def csv_to_markdown(path: Path, max_chars: int, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS) -> str:
    """The file as one table (delimiter sniffed)."""
    text = _decode(path.read_bytes())
    dialect: Any = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    if path.suffix.lower() != ".tsv":
        # A single-column file defeats the sniffer; the default dialect reads it fine.
        with contextlib.suppress(csv.Error):
            dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    return _table_section(path.stem, csv.reader(io.StringIO(text), dialect), max_rows, max_cols)


def html_to_markdown(path: Path, max_chars: int) -> str:
    """HTML without scripts and styles, converted with markdownify (ATX headings)."""
    from bs4 import BeautifulSoup
    from markdownify import markdownify

    soup = BeautifulSoup(_decode(path.read_bytes()), "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    if soup.head is not None:
        soup.head.decompose()
    body = markdownify(str(soup), heading_style="ATX", bullets="-").strip()
    # markdownify keeps the source's blank-line runs; three or more say nothing more than two.
    while "\n\n\n" in body:
        body = body.replace("\n\n\n", "\n\n")
    return f"Title: {title}\n\n{body}" if title else body


def json_to_markdown(path: Path, max_chars: int) -> str:
    """Pretty-printed JSON (or JSON lines); invalid JSON is shown as text with the parse error."""
    text = _decode(path.read_bytes())
    try:
        if path.suffix.lower() in {".jsonl", ".ndjson"}:
            values = [json.loads(line) for line in text.splitlines() if line.strip()]
            pretty = "\n".join(json.dumps(v, ensure_ascii=False) for v in values)
        else:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        return f"(not valid JSON: {exc})\n\n{text}"
    return f"```json\n{pretty}\n```"


def xml_to_markdown(path: Path, max_chars: int) -> str:
    """Pretty-printed XML, parsed with defusedxml (no entity expansion bombs, no external entities)."""
    from defusedxml import DefusedXmlException
    from defusedxml.minidom import parseString

    data = path.read_bytes()
    try:
        pretty = parseString(data).toprettyxml(indent="  ")
    except DefusedXmlException as exc:
        raise DocumentError(f"{path.name}: refused unsafe XML ({exc})") from None
    except Exception as exc:  # expat's ExpatError and friends
        return f"(not well-formed XML: {exc})\n\n{_decode(data)}"
    lines = [line for line in pretty.splitlines() if line.strip()]
    return "```xml\n" + "\n".join(lines) + "\n```"


def _unsafe_member(name: str) -> bool:
    normalized = name.replace("\\", "/")
    return normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":") or ".." in normalized.split("/")


def zip_to_markdown(path: Path, max_chars: int) -> str:
    """A listing of the archive (names, sizes, dates); nothing is extracted or decompressed."""
    infos = check_zip(path, "zip")
    rows: list[list[Any]] = [["Name", "Size", "Compressed", "Modified", "Notes"]]
    for info in infos[:MAX_ZIP_ENTRIES]:
        notes = []
        if info.is_dir():
            notes.append("folder")
        if info.flag_bits & 0x1:
            notes.append("encrypted")
        if _unsafe_member(info.filename):
            notes.append("unsafe path (absolute or '..')")
        modified = "{:04d}-{:02d}-{:02d} {:02d}:{:02d}".format(*info.date_time[:5])
        rows.append([info.filename, info.file_size, info.compress_size, modified, ", ".join(notes)])
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    summary = f"ZIP archive: {len(infos)} entries, {total} bytes uncompressed, {packed} bytes compressed"
    if packed and total / packed > 100:
        summary += f" (compression ratio {total / packed:.0f}:1, typical of a zip bomb: do not extract)"
    if len(infos) > MAX_ZIP_ENTRIES:
        summary += f"; listing the first {MAX_ZIP_ENTRIES}"
    return f"{summary}\n\n{markdown_table(rows)}"


def text_to_markdown(path: Path, max_chars: int) -> str:
    """The file's text (UTF-8, else the detected encoding)."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{path.name} looks binary and its type ({path.suffix or 'no extension'}) is not supported")
    return _decode(data)


CONVERTERS = {
    "pdf": pdf_to_markdown,
    "docx": docx_to_markdown,
    "pptx": pptx_to_markdown,
    "xlsx": xlsx_to_markdown,
    "csv": csv_to_markdown,
    "html": html_to_markdown,
    "json": json_to_markdown,
    "jsonl": json_to_markdown,
    "xml": xml_to_markdown,
    "zip": zip_to_markdown,
    "text": text_to_markdown,
}


def detect_kind(path: Path) -> str:
    """The document kind from the extension, else from the first bytes."""
    kind = KINDS.get(path.suffix.lower())
    if kind:
        return kind
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return "text"


# --- media through an OpenAI-compatible endpoint -------------------------------------------------


def _openai_client():
    from openai import AsyncOpenAI

    # Explicit default: the client would take an empty OPENAI_BASE_URL literally.
    config = ServerConfig.from_env()
    base_url = config.media_base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    api_key = config.media_api_key or os.environ.get("OPENAI_API_KEY") or "not-set"
    return AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=1, timeout=120)


async def describe_image(path: Path, question: str) -> str:
    """Ask the configured vision model about an image."""
    model = ServerConfig.from_env().vision_model
    if not model:
        raise DocumentError(
            f"{path.name} is an image and no vision model is configured: set MEMENTO_VISION_MODEL "
            "(with OPENAI_BASE_URL / OPENAI_API_KEY for an OpenAI-compatible endpoint)"
        )
    data = _read_bytes(path, MAX_IMAGE_BYTES)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    prompt = question.strip() or "Describe this image in detail. Transcribe any text, numbers and labels it contains."
    response = await _openai_client().chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
    )
    content = response.choices[0].message.content or ""
    return f"Image ({mime}), described by {model}:\n\n{content.strip()}"


async def transcribe(path: Path, kind: str) -> str:
    """Transcribe audio (or a video's audio track) with the configured model."""
    model = ServerConfig.from_env().transcribe_model
    if not model:
        raise DocumentError(
            f"{path.name} is {kind} and no transcription model is configured: set MEMENTO_TRANSCRIBE_MODEL "
            "(with OPENAI_BASE_URL / OPENAI_API_KEY for an OpenAI-compatible endpoint)"
        )
    data = _read_bytes(path, MAX_AUDIO_BYTES)
    result = await _openai_client().audio.transcriptions.create(model=model, file=(path.name, data))
    text = getattr(result, "text", result)
    return f"{kind.capitalize()} transcript by {model}:\n\n{str(text).strip()}"


# --- tools --------------------------------------------------------------------------------------


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return (
        text[:max_chars].rstrip()
        + f"\n\n[truncated: showing {max_chars} of {len(text)} characters; call again with a larger max_chars]"
    )


def _max_bytes() -> int:
    return ServerConfig.from_env().documents_max_bytes


@mcp.tool()
async def read_document(path: str, max_chars: int = 20000, question: str = "") -> str:
    """Read a local document as markdown: PDF, DOCX, PPTX, XLSX/CSV, HTML, JSON, XML, text, ZIP listings, images, audio, video.

    Args:
        path: File path, relative to the document folder(s) or absolute inside them.
        max_chars: Longest text to return; longer documents are cut with a note.
        question: For images, what to ask the vision model (default: describe and transcribe).

    """
    if not 200 <= max_chars <= 2_000_000:
        raise DocumentError("max_chars must be between 200 and 2000000")
    real = resolve_path(path)
    info = real.stat()
    if stat.S_ISDIR(info.st_mode):
        raise DocumentError(f"{path!r} is a folder; use list_documents to see what is in it")
    if not stat.S_ISREG(info.st_mode):
        raise DocumentError(f"{path!r} is not a regular file")
    if info.st_size > _max_bytes():
        raise DocumentError(
            f"{path!r} is {info.st_size} bytes, over the {_max_bytes()}-byte limit (MEMENTO_DOCUMENTS_MAX_BYTES)"
        )
    kind = detect_kind(real)
    if kind == "image":
        body = await describe_image(real, question)
    elif kind in {"audio", "video"}:
        body = await transcribe(real, kind)
    else:
        converter = CONVERTERS[kind]
        body = await anyio.to_thread.run_sync(converter, real, max_chars)
    return _truncate(f"# {_display_name(real)}\n\n{body.strip()}", max_chars)


@mcp.tool()
async def list_documents(folder: str = ".", pattern: str = "*", limit: int = 200) -> str:
    """List files under a document folder (recursively), with sizes.

    Args:
        folder: Folder relative to the document root(s), or absolute inside them.
        pattern: Glob on file names, e.g. ``*.pdf``.
        limit: Most entries to list.

    """
    base = resolve_path(folder)
    if not base.is_dir():
        raise DocumentError(f"{folder!r} is not a folder")
    roots = document_roots()
    lines = []
    count = 0
    for entry in sorted(base.rglob(pattern)):
        real = os.path.realpath(entry)
        # Symlinks out of the roots are not listed: they could not be read anyway.
        if not entry.is_file() or not any(_inside(real, root) for root in roots):
            continue
        count += 1
        if count <= limit:
            lines.append(f"{entry.relative_to(base)}\t{entry.stat().st_size} bytes")
    if count > limit:
        lines.append(f"(listing {limit} of {count} files)")
    return "\n".join(lines) if lines else f"(no files matching {pattern!r} in {folder!r})"


if __name__ == "__main__":
    run_server(mcp)
