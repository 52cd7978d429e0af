"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The real-data mirror beside the checkout (``<repo>/../shared/data/mirror``)."""
    mirror = REPO.parent / "shared" / "data" / "mirror"
    if not mirror.is_dir():
        pytest.skip(
            "../shared/data/mirror not found: the real-data mirror sits beside the checkout in CI; "
            f"tests that need real data are skipped without it (looked in {mirror})"
        )
    return mirror
