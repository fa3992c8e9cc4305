"""Suite-wide setup: keep every library offline and quiet, and share the scripted LLM server."""

from __future__ import annotations

import os

# Set before any test module imports chromadb/transformers/langsmith.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANGGRAPH_CLI_NO_ANALYTICS", "1")
os.environ.setdefault("LANGGRAPH_NO_VERSION_CHECK", "1")
os.environ.setdefault("LANGSMITH_TEST_TRACKING", "false")
os.environ.pop("LANGSMITH_TRACING", None)
os.environ.pop("LANGCHAIN_TRACING_V2", None)

import pytest

from evals.sim.openai_server import ScriptedOpenAI


@pytest.fixture
def llm_server():
    """A fresh scripted OpenAI-compatible server on 127.0.0.1 for one test."""
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(scope="session")
def embedder():
    """The real local MiniLM embedder, loaded once per session."""
    from memory.embeddings import load_embedder

    return load_embedder("minilm")


@pytest.fixture
def bank(tmp_path, embedder):
    """An empty embedded case bank in a temporary folder."""
    from memory.bank import CaseBank

    return CaseBank(tmp_path / "bank", embedder=embedder)
