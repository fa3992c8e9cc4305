"""Benchmark: does query-aware compression keep the answer, and what does the egress guard cost.

    python -m evals.benchmarks.crawl_compress [--positions 5 --budget 400 --fetches 20]

1. Compression. Synthetic long pages (20 sections, ~2.7k tokens) hide one fact at a varying
   position among distractor sections that share some of its vocabulary. Each page is cut to
   ``--budget`` tokens three ways: the page's beginning (what plain truncation keeps), BM25, and
   BM25 + MiniLM fused by reciprocal rank. Queries come in two styles: *lexical* (shares words with
   the fact) and *paraphrase* (almost none). Reported: how often the fact survives, and the
   compression ratio.
2. Guard overhead. The same local page fetched through crawl4ai's stock HTTP strategy and through
   the crawl server's guarded one (resolver check, redirect trace, streamed size cap), interleaved
   in one process; reported as medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CRAWL4AI_NO_CLOUD_NOTICE": "1"}.items():
    os.environ.setdefault(_key, _value)
os.environ.setdefault("CRAWL4_AI_BASE_DIRECTORY", str(Path(tempfile.gettempdir()) / f"memento-crawl4ai-{os.getuid()}"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from mcp_servers.compress import approx_tokens, compress  # noqa: E402

# (fact, lexical query, paraphrased query, words that distractors also use)
FACTS = [
    (
        "The lighthouse keeper of Skerry Point is Ada Quill.",
        "Who is the lighthouse keeper of Skerry Point?",
        "Which person tends the coastal beacon?",
        ["lighthouse", "point", "keeper"],
    ),
    (
        "Annual membership costs 42 dollars, billed each January.",
        "How much does annual membership cost?",
        "What is the yearly subscription price?",
        ["membership", "annual", "billed"],
    ),
    (
        "The old bridge was closed in 1987 after a flood damaged its pillars.",
        "When was the old bridge closed?",
        "In what year did the crossing shut down after high water?",
        ["bridge", "flood", "closed"],
    ),
    (
        "Our head office moved to 12 Harbour Street in Leith.",
        "Where is the head office?",
        "What is the company's current address?",
        ["office", "street", "moved"],
    ),
    (
        "The rye loaf needs 300 grams of rye flour and a pinch of salt.",
        "How much rye flour does the rye loaf need?",
        "What quantity of grain powder is required for the bread?",
        ["flour", "loaf", "salt"],
    ),
    (
        "The telescope's primary mirror is 2.4 metres wide.",
        "How wide is the telescope mirror?",
        "What is the diameter of the observatory's main optic?",
        ["telescope", "mirror", "wide"],
    ),
]
TOPICS = [
    "gardening",
    "weather",
    "football",
    "cooking",
    "astronomy",
    "sailing",
    "chess",
    "poetry",
    "railways",
    "beekeeping",
    "pottery",
    "cycling",
    "geology",
    "opera",
    "knitting",
    "falconry",
    "archery",
    "baking",
]
FILLER = [
    "The society met on the second Tuesday of the month.",
    "Volunteers kept careful notes in the ledger.",
    "Visitors often asked about the history of the place.",
    "Several members wrote letters to the paper.",
    "The archive holds photographs from many decades.",
    "A small exhibition opened in the town hall.",
    "Records from that period are incomplete.",
    "The committee voted to publish a short guide.",
]


def make_page(fact: str, shared: list[str], position: int, rng: random.Random, sections: int = 20) -> str:
    parts = ["# Parish almanac", "Notes collected by the local history society."]
    for i in range(sections):
        topic = TOPICS[i % len(TOPICS)]
        parts.append(f"## {topic.title()}")
        for _ in range(4):
            # Distractors mention the fact's words in other contexts, so matching is not trivial.
            sentence = " ".join(rng.sample(FILLER, 2))
            extra = (
                f" The {rng.choice(shared)} was discussed in connection with {topic}." if rng.random() < 0.35 else ""
            )
            parts.append(f"{topic.title()} notes: {sentence}{extra}")
        if i == position:
            parts.append(fact)
    return "\n\n".join(parts)


def bench_compression(positions: int, budget: int, seed: int, console: Console) -> None:
    from memory.embeddings import load_embedder

    embedder = load_embedder("minilm")
    rng = random.Random(seed)
    methods = {
        "beginning (truncation)": lambda page, q: compress(page, "", budget),
        "BM25": lambda page, q: compress(page, q, budget),
        "BM25 + MiniLM (RRF)": lambda page, q: compress(page, q, budget, embedder=embedder),
    }
    kept = {(m, style): 0 for m in methods for style in ("lexical", "paraphrase")}
    seconds = dict.fromkeys(methods, 0.0)
    ratios: list[float] = []
    trials = 0
    for fact, lexical, paraphrase, shared in FACTS:
        for position in sorted(rng.sample(range(20), positions)):
            page = make_page(fact, shared, position, rng)
            trials += 1
            for style, query in (("lexical", lexical), ("paraphrase", paraphrase)):
                for name, method in methods.items():
                    started = time.perf_counter()
                    out = method(page, query)
                    seconds[name] += time.perf_counter() - started
                    kept[(name, style)] += fact in out
                    ratios.append(approx_tokens(page) / max(1, approx_tokens(out)))
    table = Table(
        title=f"Fact kept after compression to {budget} tokens ({trials} pages, ~{approx_tokens(page)} tokens each)"
    )
    for column in ("method", "lexical query", "paraphrased query", "ms / page"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for name in methods:
        table.add_row(
            name,
            f"{kept[(name, 'lexical')] / trials:.0%}",
            f"{kept[(name, 'paraphrase')] / trials:.0%}",
            f"{1000 * seconds[name] / (2 * trials):.1f}",
        )
    console.print(table)
    console.print(f"median compression ratio: {statistics.median(ratios):.1f}x")


class _Page(BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


async def bench_guard(fetches: int, console: Console) -> None:
    from crawl4ai import AsyncWebCrawler, BrowserConfig, CacheMode, CrawlerRunConfig
    from crawl4ai.async_crawler_strategy import AsyncHTTPCrawlerStrategy

    from mcp_servers.crawl import CrawlSettings, fetch_markdown
    from mcp_servers.netguard import EgressPolicy

    rng = random.Random(0)
    _Page.body = (
        "<html><head><title>Bench</title></head><body>"
        + make_page(*FACTS[0][:1], FACTS[0][3], 7, rng).replace("\n\n", "</p><p>")
        + "</body></html>"
    ).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    settings = CrawlSettings(policy=EgressPolicy.from_env({"MEMENTO_CRAWL_ALLOWLIST": "127.0.0.1"}))

    async def stock() -> None:
        config = CrawlerRunConfig(cache_mode=CacheMode.BYPASS, verbose=False)
        async with AsyncWebCrawler(
            crawler_strategy=AsyncHTTPCrawlerStrategy(), config=BrowserConfig(verbose=False)
        ) as crawler:
            result = await crawler.arun(url, config=config)
        assert result.success

    async def guarded() -> None:
        await fetch_markdown(url, settings)

    times: dict[str, list[float]] = {"crawl4ai HTTP strategy (stock)": [], "guarded (crawl server)": []}
    await stock()
    await guarded()  # warm-up: imports and first connections
    for _ in range(fetches):
        for name, fn in zip(times, (stock, guarded), strict=True):
            started = time.perf_counter()
            await fn()
            times[name].append(time.perf_counter() - started)
    server.shutdown()
    server.server_close()
    table = Table(title=f"Fetch + markdown of a {len(_Page.body) // 1024} KB local page ({fetches} each, interleaved)")
    table.add_column("strategy")
    table.add_column("median ms", justify="right")
    table.add_column("ratio", justify="right")
    base = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        table.add_row(name, f"{1000 * statistics.median(values):.1f}", f"{statistics.median(values) / base:.2f}")
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=5, help="fact positions per fact (pages = 6 x positions)")
    parser.add_argument("--budget", type=int, default=400, help="token budget of the compressed page")
    parser.add_argument("--fetches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    console = Console()
    bench_compression(args.positions, args.budget, args.seed, console)
    asyncio.run(bench_guard(args.fetches, console))


if __name__ == "__main__":
    main()
