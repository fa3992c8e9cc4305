"""Query-aware compression of markdown: keep the chunks that matter to a question, in page order.

A crawled page is often ten times longer than what an executor's context can spare. The page is
split into chunks along its structure (a heading with its text; long sections into paragraphs),
each chunk is scored against the query with BM25 (rank-bm25) and, when an embedder is given, with
embedding similarity too (the two rankings fused by reciprocal rank), and the best chunks are kept
until the token budget is spent. The kept chunks are emitted in their original order with a
marker where something was cut, so the result still reads like the page.

Tokens are approximated as characters / 4: exact counting needs a tokenizer download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

CHARS_PER_TOKEN = 4
GAP_MARKER = "[…]"

_HEADING = re.compile(r"^#{1,6}\s+\S")
_WORD = re.compile(r"\w+", re.UNICODE)
# Words so frequent that they only add noise to BM25 on short chunks.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "how",
        "with",
        "do",
        "does",
        "did",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "not",
    ]
)


class Embedder(Protocol):
    """What `compress` needs from an embedder (e.g. ``memory.embeddings.load_embedder("minilm")``)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm vectors, one row per text."""
        ...


@dataclass(frozen=True)
class Chunk:
    """A contiguous piece of the markdown.

    Attributes:
        index: Position in the document (chunks are emitted in this order).
        text: The chunk's markdown.
        heading: The nearest heading above it (repeated for context when a section is split).

    """

    index: int
    text: str
    heading: str = ""


def approx_tokens(text: str) -> int:
    """Approximate token count (characters / 4, rounded up)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords, for BM25."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def _blocks(markdown: str) -> list[str]:
    """Paragraph-level blocks; a fenced code block stays one block even if it has blank lines."""
    blocks: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence and not line.strip():
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        # A heading starts a new block even without a blank line before it.
        if not in_fence and _HEADING.match(line) and current:
            blocks.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def split_chunks(markdown: str, max_chunk_tokens: int = 300) -> list[Chunk]:
    """Split markdown into sections (heading + body), and long sections into paragraph groups.

    Args:
        markdown: The document.
        max_chunk_tokens: Sections longer than this are split at paragraph boundaries; a single
            paragraph longer than this is split at line boundaries.

    Returns:
        The chunks in document order.

    """
    max_chars = max_chunk_tokens * CHARS_PER_TOKEN
    sections: list[tuple[str, list[str]]] = []
    for block in _blocks(markdown):
        if _HEADING.match(block) or not sections:
            heading = block.splitlines()[0] if _HEADING.match(block) else ""
            sections.append((heading, [block]))
        else:
            sections[-1][1].append(block)

    pieces: list[tuple[str, str]] = []
    for heading, blocks in sections:
        group: list[str] = []
        size = 0
        for block in _split_long(blocks, max_chars):
            # A heading is never left alone: it travels with the start of its body.
            alone = len(group) == 1 and group[0] == heading
            if group and not alone and size + len(block) > max_chars:
                pieces.append((heading, "\n\n".join(group)))
                group, size = [], 0
            group.append(block)
            size += len(block) + 2
        if group:
            pieces.append((heading, "\n\n".join(group)))
    return [Chunk(index=i, text=text, heading=heading) for i, (heading, text) in enumerate(pieces)]


def _split_long(blocks: list[str], max_chars: int) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if len(block) <= max_chars:
            out.append(block)
            continue
        lines: list[str] = []
        size = 0
        for line in _split_line(block.splitlines(), max_chars):
            if lines and size + len(line) > max_chars:
                out.append("\n".join(lines))
                lines, size = [], 0
            lines.append(line)
            size += len(line) + 1
        if lines:
            out.append("\n".join(lines))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_line(lines: list[str], max_chars: int) -> list[str]:
    """Cut over-long lines at sentence ends, then at spaces, then hard (minified text)."""
    out: list[str] = []
    for line in lines:
        if len(line) <= max_chars:
            out.append(line)
            continue
        piece = ""
        for sentence in _SENTENCE_END.split(line):
            for word in sentence.split(" ") if len(sentence) > max_chars else [sentence]:
                while len(word) > max_chars:
                    if piece:
                        out.append(piece)
                        piece = ""
                    out.append(word[:max_chars])
                    word = word[max_chars:]
                if piece and len(piece) + 1 + len(word) > max_chars:
                    out.append(piece)
                    piece = word
                else:
                    piece = f"{piece} {word}" if piece else word
        if piece:
            out.append(piece)
    return [piece.rstrip() for piece in out]


def score_chunks(
    chunks: list[Chunk], query: str, embedder: Embedder | None = None, min_similarity: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of each chunk to the query.

    BM25 scores each chunk (its heading included, so a section's later paragraphs keep the
    section's topic). With an embedder, BM25 and cosine rankings are fused by reciprocal rank,
    which needs no calibration between the two kinds of score.

    Args:
        chunks: The chunks.
        query: The question.
        embedder: Optional sentence embedder.
        min_similarity: Cosine similarity from which a chunk without shared words counts as relevant.

    Returns:
        Scores (higher is better) and a mask of the chunks that match the query at all.

    """
    from rank_bm25 import BM25Okapi

    if not chunks:
        return np.zeros(0), np.zeros(0, dtype=bool)
    docs = [
        tokenize(c.text if not c.heading or c.text.startswith(c.heading) else f"{c.heading}\n{c.text}") for c in chunks
    ]
    query_tokens = tokenize(query)
    if query_tokens and any(docs):
        # An empty document would make BM25's average length lie; a placeholder token keeps it honest.
        bm25 = np.asarray(BM25Okapi([d or ["\u2205"] for d in docs]).get_scores(query_tokens), dtype=float)
    else:
        bm25 = np.zeros(len(chunks))
    query_set = set(query_tokens)
    relevant = np.array([bool(query_set.intersection(d)) for d in docs])
    if embedder is None:
        return bm25, relevant
    vectors = np.asarray(embedder.embed([query] + [c.text for c in chunks]), dtype=float)
    cosine = vectors[1:] @ vectors[0]
    k = 60.0  # the usual RRF constant: damps the influence of the very top ranks
    fused = np.zeros(len(chunks))
    for scores in (bm25, cosine):
        ranks = np.empty(len(chunks))
        ranks[np.argsort(-scores, kind="stable")] = np.arange(len(chunks))
        fused += 1.0 / (k + ranks + 1.0)
    return fused, relevant | (cosine >= min_similarity)


def compress(
    markdown: str,
    query: str,
    max_tokens: int = 2000,
    embedder: Embedder | None = None,
    max_chunk_tokens: int = 300,
) -> str:
    """Keep the chunks most relevant to ``query`` within ``max_tokens``, in original order.

    The first chunk (title and lead) is kept too when it costs at most a tenth of the budget, for
    orientation. Chunks that do not match the query at all are left out even if budget remains;
    when nothing matches, the beginning of the document is kept.

    Args:
        markdown: The document.
        query: What the reader is looking for; empty keeps the beginning of the document.
        max_tokens: Budget for the result (approximate tokens, characters / 4).
        embedder: Optional sentence embedder for hybrid scoring.
        max_chunk_tokens: Target chunk size.

    Returns:
        The compressed markdown; the document unchanged when it already fits.

    """
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    if approx_tokens(markdown) <= max_tokens:
        return markdown
    budget = max_tokens * CHARS_PER_TOKEN
    chunks = split_chunks(markdown, max_chunk_tokens=min(max_chunk_tokens, max_tokens))
    if not chunks:
        return markdown[:budget]
    order: list[int] = []
    prefix_only = False
    if query.strip():
        scores, relevant = score_chunks(chunks, query, embedder)
        # Stable sort: among equal scores the earlier chunk wins.
        order = [int(i) for i in np.argsort(-scores, kind="stable") if relevant[i]]
    if not order:
        order, prefix_only = list(range(len(chunks))), True
    elif 0 not in order and _cost(chunks[0]) <= budget // 10:
        order.insert(0, 0)

    kept: set[int] = set()
    used = 0
    for i in order:
        cost = _cost(chunks[i])
        if used + cost <= budget:
            kept.add(i)
            used += cost
        elif prefix_only:
            break
    if not kept:
        # Even the best chunk is over budget: return its beginning rather than nothing.
        best = chunks[order[0]].text
        return best[: max(0, budget - len(GAP_MARKER) - 2)] + "\n" + GAP_MARKER
    return _render(chunks, kept)


def _cost(chunk: Chunk) -> int:
    # Counts the gap marker and a repeated heading as if both were needed (an upper bound).
    cost = len(chunk.text) + len(GAP_MARKER) + 4
    if chunk.heading and not chunk.text.startswith(chunk.heading):
        cost += len(chunk.heading) + 2
    return cost


def _render(chunks: list[Chunk], kept: set[int]) -> str:
    parts: list[str] = []
    previous = -1
    shown_heading = ""
    for i in sorted(kept):
        chunk = chunks[i]
        if i != previous + 1:
            parts.append(GAP_MARKER)
        # A paragraph kept without the start of its section gets the section heading back, so
        # the reader knows where it came from.
        if chunk.heading and chunk.heading != shown_heading and not chunk.text.startswith(chunk.heading):
            parts.append(chunk.heading)
        shown_heading = chunk.heading
        parts.append(chunk.text)
        previous = i
    if previous != len(chunks) - 1:
        parts.append(GAP_MARKER)
    return "\n\n".join(parts)
