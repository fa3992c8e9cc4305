"""Test doubles for what lies outside this machine (search APIs, raw HTTP, crashing MCP servers).

The scripted OpenAI-compatible server is the simulator's (`evals.sim.openai_server`); tests import
it from there, so nothing in `evals/` depends on the tests.
"""
