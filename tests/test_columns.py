import numpy as np
import pytest
import torch

from recstack import Columns
from recstack.core.errors import DataError


def test_batches_cover_every_row_once_with_small_last_batch():
    data = Columns({"a": torch.arange(10), "b": np.arange(10.0)})
    sizes = [b["a"].shape[0] for b in data.batches(4)]
    assert sizes == [4, 4, 2]
    assert data["b"].dtype == torch.float32
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([b["a"] for b in data.batches(3, order)])
    assert seen.tolist() == order.tolist()
    assert [b["a"].shape[0] for b in data.batches(4, drop_remainder=True)] == [4, 4]


def test_errors_name_the_problem():
    with pytest.raises(DataError, match="same number of rows"):
        Columns({"a": torch.arange(3), "b": torch.arange(4)})
    with pytest.raises(DataError, match="holds strings"):
        Columns({"title": np.array(["x", "y"])})
    with pytest.raises(KeyError, match=r"no column .b.; its columns are \[.a.\]"):
        Columns({"a": torch.arange(3)})["b"]
    with pytest.raises(DataError, match="empty"):
        Columns({})
