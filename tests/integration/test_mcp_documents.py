"""The `documents` MCP server over a real stdio MCP session, on fixture files built here."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import struct
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from tests.fakes.mcp_helpers import call

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def make_pdf(path: Path, pages: list[str]) -> None:
    """A minimal valid PDF: one Helvetica text line per page, with a correct xref table."""
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for page_id, text in zip(page_ids, pages, strict=True):
        stream = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def make_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Annual Report", level=0)
    document.add_heading("Results", level=1)
    document.add_paragraph("Revenue grew to 42 million euros.")
    document.add_paragraph("Strong demand", style="List Bullet")
    document.add_paragraph("New markets", style="List Bullet")
    table = document.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("Region", "Sales"), ("North", "30"), ("South | East", "12")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    document.add_heading("Outlook", level=2)
    document.add_paragraph("Cautiously optimistic.")
    document.save(path)


def make_pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Roadmap"
    body = slide.placeholders[1].text_frame
    body.text = "Launch in March"
    sub = body.add_paragraph()
    sub.text = "Beta first"
    sub.level = 1
    slide.notes_slide.notes_text_frame.text = "Mention the budget."
    slide2 = presentation.slides.add_slide(presentation.slide_layouts[5])
    slide2.shapes.title.text = "Numbers"
    table = slide2.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for r, (a, b) in enumerate([("Quarter", "Units"), ("Q1", "1200")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    presentation.save(path)


def make_xlsx(path: Path) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    people = workbook.active
    people.title = "People"
    people.append(["Name", "Age", "City"])
    people.append(["Ada", 36, "London"])
    people.append(["Alan", 41, "Wilmslow"])
    big = workbook.create_sheet("Big")
    big.append(["n", "square"])
    for n in range(1, 251):
        big.append([n, n * n])
    workbook.save(path)


def make_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    make_pdf(root / "report.pdf", ["Quarterly revenue was 42 million.", "The second page mentions Zanzibar."])
    make_docx(root / "report.docx")
    make_pptx(root / "deck.pptx")
    make_xlsx(root / "book.xlsx")
    (root / "prices.csv").write_text("item;price\nwidget;4.50\ngadget;12\n")
    (root / "page.html").write_text(
        "<html><head><title>Guide</title><style>body{color:red}</style></head><body>"
        "<h1>Guide</h1><p>Read the <a href='https://example.com/docs'>docs</a>.</p>"
        "<ul><li>one</li><li>two</li></ul><script>alert('SCRIPT-CODE')</script></body></html>"
    )
    (root / "data.json").write_text('{"name":"memento","tags":["agents","memory"],"nested":{"k":1}}')
    (root / "feed.xml").write_text("<feed><entry id='1'><title>Hello</title></entry></feed>")
    (root / "notes.txt").write_text("Plain notes: the launch code is 1234.\n" + "filler line\n" * 200)
    (root / "latin1.txt").write_bytes("Café crème brûlée".encode("latin-1"))
    with zipfile.ZipFile(root / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.md", "hello")
        archive.writestr("../evil.txt", "escape attempt")
        archive.writestr("zeros.bin", b"\0" * 2_000_000)
    (root / "chart.png").write_bytes(make_png())
    (root / "talk.mp3").write_bytes(b"ID3not-really-audio")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inside a subfolder")
    os.symlink("/etc/passwd", root / "passwd-link")
    os.symlink("/etc", root / "etc-link")
    return root


@pytest.fixture
def anyio_backend():
    return "asyncio"


def client(root: Path, **env) -> MultiServerMCPClient:
    return MultiServerMCPClient(
        {
            "documents": {
                "command": sys.executable,
                "args": ["-m", "mcp_servers.documents"],
                "transport": "stdio",
                "cwd": str(REPO),
                "env": {"MEMENTO_DOCUMENTS_ROOTS": str(root), **env},
            }
        }
    )


@pytest.mark.anyio
async def test_formats_become_structured_markdown(docs):
    async with client(docs).session("documents") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        read = tools["read_document"]

        async def ok(path, **args):
            status, text = await call(read, path=path, **args)
            assert status == "success", (path, text)
            assert text.startswith(f"# {path}\n")
            return text

        pdf = await ok("report.pdf")
        assert "PDF, 2 pages" in pdf
        assert (
            pdf.index("## Page 1")
            < pdf.index("Quarterly revenue was 42 million.")
            < pdf.index("## Page 2")
            < pdf.index("Zanzibar")
        )

        docx = await ok("report.docx")
        assert "# Annual Report" in docx and "## Results" in docx and "### Outlook" in docx
        assert "- Strong demand" in docx and "- New markets" in docx
        assert "| Region | Sales |" in docx and "| South \\| East | 12 |" in docx
        assert docx.index("Revenue grew") < docx.index("| Region") < docx.index("### Outlook")

        pptx = await ok("deck.pptx")
        assert (
            pptx.index("## Slide 1") < pptx.index("### Roadmap") < pptx.index("## Slide 2") < pptx.index("### Numbers")
        )
        assert "- Launch in March" in pptx and "  - Beta first" in pptx
        assert "Notes: Mention the budget." in pptx
        assert "| Quarter | Units |" in pptx and "| Q1 | 1200 |" in pptx

        xlsx = await ok("book.xlsx")
        assert "## Sheet: People" in xlsx and "## Sheet: Big" in xlsx
        assert "| Name | Age | City |" in xlsx and "| Ada | 36 | London |" in xlsx
        assert "| 200 | 40000 |" in xlsx and "| 201 | 40401 |" not in xlsx
        assert "showing the first 200 of 250 data rows" in xlsx

        csv_text = await ok("prices.csv")
        assert "## Sheet: prices" in csv_text and "| item | price |" in csv_text and "| widget | 4.50 |" in csv_text

        html = await ok("page.html")
        assert "Title: Guide" in html and "# Guide" in html
        assert "[docs](https://example.com/docs)" in html and "- one" in html
        assert "SCRIPT-CODE" not in html and "color:red" not in html

        data = await ok("data.json")
        assert '"tags": [\n    "agents",' in data and data.count("```") == 2

        xml = await ok("feed.xml")
        assert '<entry id="1">\n    <title>Hello</title>' in xml

        assert "Café crème brûlée" in await ok("latin1.txt")

        listing = await ok("bundle.zip")
        assert "3 entries" in listing and "typical of a zip bomb" in listing
        assert "| readme.md | 5 |" in listing and "| zeros.bin | 2000000 |" in listing
        assert "../evil.txt" in listing and "unsafe path" in listing
        assert not (docs.parent / "evil.txt").exists()

        truncated = await ok("notes.txt", max_chars=300)
        assert "the launch code is 1234" in truncated
        assert "[truncated: showing 300 of" in truncated and len(truncated) < 450

        status, text = await call(read, path="sub/inner.txt")
        assert status == "success" and "inside a subfolder" in text

        status, text = await call(tools["list_documents"], folder=".", pattern="*.txt")
        assert status == "success"
        assert "notes.txt" in text and "sub/inner.txt" in text and "passwd-link" not in text


@pytest.mark.anyio
async def test_paths_outside_the_roots_are_refused_and_the_server_keeps_serving(docs):
    attempts = {
        "../../etc/passwd": "outside the allowed document folders",
        "/etc/passwd": "outside the allowed document folders",
        "passwd-link": "symlink to outside",
        "etc-link/hostname": "symlink to outside",
        str(docs / ".." / ".." / "etc" / "passwd"): "outside the allowed document folders",
        "missing.pdf": "no such file",
        "sub": "is a folder",
        "": "empty",
    }
    async with client(docs).session("documents") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        for path, reason in attempts.items():
            status, text = await call(tools["read_document"], path=path)
            assert status == "error", (path, text)
            assert reason in text, (path, text)
            assert "root:" not in text  # no passwd content leaked
            status, text = await call(tools["read_document"], path="notes.txt", max_chars=500)
            assert status == "success" and "launch code" in text
        status, text = await call(tools["list_documents"], folder="/etc")
        assert status == "error" and "outside the allowed document folders" in text


@pytest.mark.anyio
async def test_images_go_to_the_configured_vision_model(docs, llm_server):
    llm_server.script("vision-test", "A small red square; no text.")
    env = {"MEMENTO_VISION_MODEL": "vision-test", "OPENAI_BASE_URL": llm_server.url, "OPENAI_API_KEY": "test"}
    async with client(docs, **env).session("documents") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        status, text = await call(tools["read_document"], path="chart.png", question="What colour is it?")
    assert status == "success", text
    assert "described by vision-test" in text and "A small red square; no text." in text
    (request,) = llm_server.requests_for("vision-test")
    parts = request["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "What colour is it?"}
    expected = "data:image/png;base64," + base64.b64encode((docs / "chart.png").read_bytes()).decode()
    assert parts[1]["image_url"]["url"] == expected


@pytest.mark.anyio
async def test_media_without_a_configured_model_is_a_clear_error(docs):
    async with client(docs).session("documents") as session:
        tools = {t.name: t for t in await load_mcp_tools(session)}
        status, text = await call(tools["read_document"], path="chart.png")
        assert status == "error" and "no vision model is configured" in text and "MEMENTO_VISION_MODEL" in text
        status, text = await call(tools["read_document"], path="talk.mp3")
        assert (
            status == "error" and "no transcription model is configured" in text and "MEMENTO_TRANSCRIBE_MODEL" in text
        )
        status, text = await call(tools["read_document"], path="data.json", max_chars=1000)
        assert status == "success" and json.loads(text.split("```json\n", 1)[1].split("\n```")[0])["name"] == "memento"


# --- decompression bombs -----------------------------------------------------------------------

BOMB_MEMBERS = {
    "docx": "word/document.xml",
    "pptx": "ppt/slides/slide1.xml",
    "xlsx": "xl/worksheets/sheet1.xml",
}


def _bomb_stream(size_mb: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of an XML part padded with ``size_mb`` MB of spaces, built in ~10 ms.

    After a full flush the compressor's output depends only on what follows, so one compressed
    megabyte of spaces is repeated instead of compressing 200 MB. Returns (stream, size, crc).
    """
    head = b'<?xml version="1.0" encoding="UTF-8"?><doc><body>'
    tail = b"<p>never shown</p></body></doc>"
    spaces = b" " * (1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    piece = deflate.compress(spaces) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.compress(tail) + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(size_mb):
        crc = zlib.crc32(spaces, crc)
    crc = zlib.crc32(tail, crc)
    return first + piece * size_mb + last, len(head) + size_mb * len(spaces) + len(tail), crc


def write_bomb(path: Path, template: Path, member: str, size_mb: int = 200, declared: int | None = None) -> None:
    """Copy a genuine package, replacing ``member`` with a bomb; ``declared`` lies about its size."""
    stream, size, crc = _bomb_stream(size_mb)
    with zipfile.ZipFile(template) as source:
        parts = [(i.filename, source.read(i)) for i in source.infolist() if i.filename != member]
    out = bytearray()
    central = bytearray()

    def add(name: bytes, method: int, data: bytes, crc32: int, real_size: int) -> None:
        header = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc32, len(data), real_size, len(name), 0
        )
        central.extend(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                method,
                0,
                0x21,
                crc32,
                len(data),
                real_size,
                len(name),
                0,
                0,
                0,
                0,
                0,
                len(out),
            )
            + name
        )
        out.extend(header + name + data)

    for name, data in parts:
        add(name.encode(), 0, data, zlib.crc32(data), len(data))
    add(member.encode(), 8, stream, crc, size if declared is None else declared)
    count = len(parts) + 1
    out.extend(central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(out), 0))
    path.write_bytes(bytes(out))


def write_big_docx(path: Path, template: Path, paragraphs: int = 120_000) -> None:
    """A genuine DOCX whose document.xml is ~11 MB (over the size python-docx is trusted with)."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(
        f"<w:p><w:r><w:t>Paragraph {i}: the quick brown fox jumps over the lazy dog.</w:t></w:r></w:p>"
        for i in range(paragraphs)
    )
    xml = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{w}"><w:body>'
        '<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Big Report</w:t></w:r></w:p>'
        f"{body}</w:body></w:document>"
    )
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for info in source.infolist():
            data = xml.encode() if info.filename == "word/document.xml" else source.read(info)
            out.writestr(info.filename, data)


def _server_peak_rss_mb() -> float:
    """Peak resident memory of this test's documents server (a child process), in MB."""
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
            if int(fields["PPid"]) == os.getpid() and b"mcp_servers.documents" in cmdline:
                peaks.append(int(fields["VmHWM"].split()[0]) / 1024)
    assert len(peaks) == 1, peaks
    return peaks[0]


@pytest.mark.anyio
async def test_decompression_bombs_are_refused_fast_and_memory_light(docs, tmp_path):
    templates = {"docx": docs / "report.docx", "pptx": docs / "deck.pptx", "xlsx": docs / "book.xlsx"}
    for kind, member in BOMB_MEMBERS.items():
        write_bomb(tmp_path / f"bomb.{kind}", templates[kind], member)
        # Declares 1,000 bytes but inflates to 200 MB: only a reader that stops at the declared size survives it.
        write_bomb(tmp_path / f"liar.{kind}", templates[kind], member, declared=1000)
    (tmp_path / "report.docx").write_bytes((docs / "report.docx").read_bytes())
    write_big_docx(tmp_path / "big.docx", docs / "report.docx")
    assert (tmp_path / "bomb.docx").stat().st_size < 2_000_000
    started = time.monotonic()
    async with client(tmp_path).session("documents") as session:
        read = {t.name: t for t in await load_mcp_tools(session)}["read_document"]
        for kind in BOMB_MEMBERS:
            status, text = await call(read, path=f"bomb.{kind}", max_chars=500)
            assert status == "error", (kind, text)
            assert "decompression bomb" in text and "MEMENTO_DOCUMENTS_MAX" in text, text
            status, text = await call(read, path=f"liar.{kind}", max_chars=500)
            assert status == "error" and f"not a readable {kind.upper()}" in text, (kind, text)
        # A genuine document still reads, and output past max_chars is not converted.
        status, text = await call(read, path="report.docx", max_chars=200)
        assert status == "success" and "Annual Report" in text and "Cautiously optimistic" not in text
        # A large genuine document is streamed and only its start converted.
        status, text = await call(read, path="big.docx", max_chars=500)
        assert status == "success" and text.startswith("# big.docx\n\n# Big Report\n\nParagraph 0: the quick"), text
        assert "Paragraph 100:" not in text and "[truncated: showing 500 of" in text
        peak = _server_peak_rss_mb()
    assert peak < 200, f"the documents server peaked at {peak:.0f} MB"
    assert time.monotonic() - started < 30


def test_package_limits_come_from_the_environment(docs, monkeypatch):
    from mcp_servers.documents import DocumentError, check_zip

    assert len(check_zip(docs / "report.docx", "docx")) > 5
    monkeypatch.setenv("MEMENTO_DOCUMENTS_MAX_ZIP_MEMBERS", "3")
    with pytest.raises(DocumentError, match="ZIP members, over the 3 limit"):
        check_zip(docs / "report.docx", "docx")
    monkeypatch.setenv("MEMENTO_DOCUMENTS_MAX_ZIP_MEMBERS", "10000")
    monkeypatch.setenv("MEMENTO_DOCUMENTS_MAX_UNZIPPED_BYTES", "1000")
    with pytest.raises(DocumentError, match="over the 1000-byte limit"):
        check_zip(docs / "report.docx", "docx")
