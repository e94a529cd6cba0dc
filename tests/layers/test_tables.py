"""fill_table: per-id tables copied into buffers in place, with the buffer's dtype and shape."""

import pytest
import torch
from torch import nn

from recstack.core.errors import ShapeError
from recstack.layers.tables import fill_table


def test_a_table_is_copied_in_place_with_the_buffer_s_dtype():
    module = nn.Module()
    module.register_buffer("table", torch.zeros(3, 2, dtype=torch.long))
    before = module.table
    fill_table(module, "table", torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert module.table is before and module.table.dtype == torch.long
    assert module.table.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_a_table_of_another_shape_is_refused_by_name():
    module = nn.Module()
    module.register_buffer("text_table", torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"text_table must have shape \(3, 2\); got \(4, 2\)"):
        fill_table(module, "text_table", torch.zeros(4, 2))
    assert module.text_table.abs().sum() == 0
