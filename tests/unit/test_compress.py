"""Query-aware compression: chunking along the markdown's structure, relevance, budget, order."""

from __future__ import annotations

import pytest

from mcp_servers.compress import GAP_MARKER, approx_tokens, compress, split_chunks

TOPICS = ["gardening", "weather", "football", "cooking", "astronomy", "sailing"]


def section(topic: str, paragraphs: int = 4) -> str:
    body = "\n\n".join(f"Paragraph {i} is about {topic}; {topic} facts and {topic} stories." for i in range(paragraphs))
    return f"## {topic.title()}\n\n{body}"


def almanac(extra: dict[int, str]) -> str:
    sections = [section(t) for t in TOPICS]
    for position, text in sorted(extra.items(), reverse=True):
        sections.insert(position, text)
    return "# Almanac\n\nThe yearly almanac.\n\n" + "\n\n".join(sections)


def test_chunks_follow_headings_and_keep_code_fences_whole():
    doc = "# Title\n\nIntro.\n## A\ntext a\n\n```python\nx = 1\n\ny = 2\n```\n\n## B\n\ntext b"
    chunks = split_chunks(doc)
    assert [c.heading for c in chunks] == ["# Title", "## A", "## B"]
    assert "```python\nx = 1\n\ny = 2\n```" in chunks[1].text
    assert chunks[2].text == "## B\n\ntext b"


def test_long_sections_split_at_sentence_ends_and_remember_their_heading():
    sentences = " ".join(f"Sentence number {i} says something." for i in range(200))
    chunks = split_chunks(f"## Long\n\n{sentences}", max_chunk_tokens=100)
    assert len(chunks) > 5
    assert all(len(c.text) <= 100 * 4 for c in chunks)
    assert all(c.heading == "## Long" for c in chunks)
    assert all(c.text.rstrip().endswith(".") for c in chunks)  # no sentence cut in the middle
    assert chunks[0].text.startswith("## Long\n\nSentence number 0")  # the heading travels with its body


def test_short_documents_are_returned_unchanged():
    doc = "# Note\n\nShort."
    assert compress(doc, "anything", max_tokens=100) == doc


def test_keeps_the_relevant_sections_in_page_order_within_budget():
    doc = almanac(
        {
            1: "## Lighthouse\n\nThe lighthouse keeper of Skerry Point is Ada Quill.",
            5: "## Keeper's pay\n\nThe lighthouse keeper earns forty shillings a week.",
        }
    )
    out = compress(doc, "What does the lighthouse keeper of Skerry Point earn?", max_tokens=120)
    assert approx_tokens(out) <= 120
    assert "Ada Quill" in out and "forty shillings" in out
    assert out.index("Ada Quill") < out.index("forty shillings")  # original order, not score order
    assert GAP_MARKER in out
    for topic in TOPICS:
        assert f"{topic} stories" not in out
    assert out.startswith("# Almanac")  # the small lead chunk is kept for orientation


def test_a_paragraph_kept_without_its_section_start_gets_its_heading_back():
    filler = "\n\n".join(f"Background sentence {i} about the harbour and its many boats." for i in range(30))
    doc = f"# Port\n\n## Harbour\n\n{filler}\n\nThe harbour master is called Tobias Wren.\n\n{section('cooking')}"
    out = compress(doc, "Who is the harbour master?", max_tokens=60, max_chunk_tokens=40)
    assert "Tobias Wren" in out
    assert out.index("## Harbour") < out.index("Tobias Wren")


def test_without_a_query_or_a_match_the_beginning_is_kept():
    doc = almanac({})
    for query in ("", "zebra quantum"):
        out = compress(doc, query, max_tokens=80)
        assert out.startswith("# Almanac\n\nThe yearly almanac.")
        assert "Sailing" not in out
        assert approx_tokens(out) <= 80


def test_a_match_larger_than_the_budget_is_cut_to_fit_rather_than_dropped():
    doc = "## Everything\n\n" + "needle " * 2000 + "\n\n" + section("cooking")
    out = compress(doc, "needle", max_tokens=60, max_chunk_tokens=1000)
    assert "## Everything" in out and "needle needle" in out
    assert "cooking" not in out
    assert approx_tokens(out) <= 60


def test_rejects_a_non_positive_budget():
    with pytest.raises(ValueError, match="max_tokens"):
        compress("text " * 100, "q", max_tokens=0)


def test_embeddings_find_the_section_that_shares_no_words_with_the_query(embedder):
    doc = almanac({3: "## Fees\n\nMembers pay 42 dollars monthly, billed on the first day."})
    query = "How much does a subscription cost?"
    assert "42 dollars" not in compress(doc, query, max_tokens=120)  # BM25 alone has nothing to match
    out = compress(doc, query, max_tokens=120, embedder=embedder)
    assert "Members pay 42 dollars monthly" in out
    assert approx_tokens(out) <= 120
