"""Fixtures for the connector tests: the shared real data and the repository's own fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (read-only real data); skip when absent."""
    path = (REPO / ".." / "shared" / "data").resolve()
    if not (path / "pubmed").is_dir():
        pytest.skip(f"shared real data not found at {path} (see SOURCES.md); skipping")
    return path


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """``tests/data`` of this repository (small fixtures that ship with the tests)."""
    return FIXTURES
