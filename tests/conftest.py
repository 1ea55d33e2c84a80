"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ml_small_zip() -> Path:
    """The real MovieLens ml-latest-small archive, kept outside the repository."""
    path = (
        Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml-latest-small.zip"
    )
    assert path.is_file(), f"missing test dataset {path}"
    return path
