"""Shared fixtures: a synthetic MovieLens-format directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic_movielens import write_synthetic_ml100k


@pytest.fixture
def synthetic_ml100k(tmp_path: Path) -> Path:
    """A small random dataset in the ml-100k file formats."""
    return write_synthetic_ml100k(tmp_path / "ml-100k")


@pytest.fixture
def real_movielens():
    """MovieLens 100K from $RECSTACK_DATA_DIR (real-data tests); skips when it is not set."""
    import os

    from recstack.datasets import load_movielens_100k

    data_dir = os.environ.get("RECSTACK_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "u.data").is_file():
        pytest.skip("set RECSTACK_DATA_DIR to an ml-100k directory to run real-data tests")
    return load_movielens_100k(data_dir)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a busy shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
