"""Synthetic task families for the simulated-LLM benchmark.

Each family is one kind of question with its own hidden rule (its "trick"): knowing how earlier
questions of the same family were solved is what helps. Families deliberately share surface
words — the same report contexts and item codes, and families come in confusable pairs ("which
shelf holds" / "which shelf held") — so nearest-neighbour retrieval by question text often shows
look-alike cases of another family, which mislead the simulated model. A retrieval policy that
learns which cases actually help can beat plain similarity; no memory cannot learn at all.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from evals.datasets import Example

# Confusable pairs: the two clauses of a pair differ by a word or two.
CLAUSES: tuple[str, ...] = (
    "which shelf currently holds",
    "which shelf previously held",
    "what discount tier applies to",
    "what discount tier expired for",
    "how many days until the restock of",
    "how many days since the last restock of",
    "who approved the purchase order for",
    "who rejected the purchase order for",
    "what is the checksum digit of",
    "what is the check letter of",
    "which supplier ships",
    "which supplier returned",
)
CONTEXTS: tuple[str, ...] = (
    "In the quarterly warehouse report,",
    "According to the northern depot ledger,",
    "In last month's inventory audit,",
    "Based on the regional stock sheet,",
)
_WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper")


@dataclass(frozen=True)
class SimTask:
    """One synthetic task: its family, question and the single correct answer."""

    task_id: str
    family: str
    question: str
    answer: str

    def example(self) -> Example:
        """As an eval example; the family is the source, so results break down per family."""
        return Example(task_id=self.task_id, question=self.question, ground_truth=self.answer, source=self.family)


def family_name(index: int) -> str:
    """Stable family label ``f00``, ``f01``, ..."""
    return f"f{index:02d}"


def _answer(family: str, item: str) -> str:
    # The family's hidden rule: a deterministic function of family and item.
    h = int(hashlib.sha256(f"{family}|{item}".encode()).hexdigest(), 16)
    return f"{_WORDS[h % len(_WORDS)]}-{h % 97}"


def generate_tasks(families: int = 10, per_family: int = 12, seed: int = 0) -> list[SimTask]:
    """Build a shuffled stream of ``families × per_family`` distinct tasks.

    Args:
        families: Number of families (at most the number of clauses, 12).
        per_family: Instances per family.
        seed: Controls item codes, contexts and stream order.

    Raises:
        ValueError: Sizes out of range.

    """
    if not 1 <= families <= len(CLAUSES):
        raise ValueError(f"families must be between 1 and {len(CLAUSES)}, got {families}")
    if per_family < 1:
        raise ValueError(f"per_family must be >= 1, got {per_family}")
    rng = random.Random(f"sim-tasks-{seed}")
    tasks: list[SimTask] = []
    for f in range(families):
        name = family_name(f)
        items: set[str] = set()
        while len(items) < per_family:
            items.add(f"item {rng.choice('KLMNPRSTVW')}-{rng.randint(100, 999)}")
        for j, item in enumerate(sorted(items)):
            context = rng.choice(CONTEXTS)
            question = f"{context} {CLAUSES[f]} {item}?"
            tasks.append(
                SimTask(task_id=f"sim-{name}-{j:03d}", family=name, question=question, answer=_answer(name, item))
            )
    rng.shuffle(tasks)
    return tasks
