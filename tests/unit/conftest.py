"""Unit tests make no network calls: sockets are disabled for every test here (pytest-socket).

Unix sockets stay allowed (asyncio's event loop wakes itself through a socket pair). A test that
needs a real server on loopback belongs in tests/integration.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in item.nodeid.replace("\\", "/") and not item.get_closest_marker("enable_socket"):
            item.add_marker(pytest.mark.disable_socket)
