"""Shared fixtures: a synthetic MovieLens-format directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic_movielens import write_synthetic_ml100k


@pytest.fixture
def synthetic_ml100k(tmp_path: Path) -> Path:
    """A small random dataset in the ml-100k file formats."""
    return write_synthetic_ml100k(tmp_path / "ml-100k")
