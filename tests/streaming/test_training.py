"""fit / evaluate from a ParquetSource: the same losses and metrics as from Columns of the same rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pyarrow")

from recstack import Columns  # noqa: E402
from recstack.features import StringLookup  # noqa: E402
from recstack.streaming import ParquetSource, fit_streaming_vocabulary  # noqa: E402

from .helpers import TwoTower, interactions, write_parquet  # noqa: E402


def _fit(data, shuffle: bool, epochs: int = 3):
    torch.manual_seed(0)
    model = TwoTower()
    history = model.fit(data, epochs=epochs, batch_size=64, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.5),
                        shuffle=shuffle, seed=7, verbose=False)
    return model, history.history


def test_unshuffled_fit_and_evaluate_equal_columns(tmp_path, one_thread):
    data = {k: v for k, v in interactions(1000).items() if k in ("user", "item")}
    source = ParquetSource(write_parquet(tmp_path / "d.parquet", data, row_group_size=150), ["user", "item"],
                           chunk_rows=100)
    from_parquet, parquet_history = _fit(source, shuffle=False)
    from_columns, columns_history = _fit(Columns(data), shuffle=False)
    for key in ("loss", "total_loss", "factorized_top_k/top_5_categorical_accuracy"):
        assert parquet_history[key] == columns_history[key], key
    assert torch.equal(from_parquet.user.weight, from_columns.user.weight)
    held_out = {k: v for k, v in interactions(300, seed=1).items() if k in ("user", "item")}
    held_out_source = ParquetSource(write_parquet(tmp_path / "e.parquet", held_out), ["user", "item"], chunk_rows=70)
    assert from_parquet.evaluate(held_out_source, batch_size=128) == from_columns.evaluate(Columns(held_out),
                                                                                           batch_size=128)


def test_shuffled_fit_is_reproducible_and_learns(tmp_path, one_thread):
    data = {k: v for k, v in interactions(1000).items() if k in ("user", "item")}
    source = ParquetSource(write_parquet(tmp_path / "d.parquet", data, row_group_size=150), ["user", "item"],
                           chunk_rows=100, shuffle_buffer=300)
    model, first = _fit(source, shuffle=True, epochs=8)
    _, second = _fit(source, shuffle=True, epochs=8)
    assert first["loss"] == second["loss"]
    assert first["loss"][-1] < first["loss"][0]
    assert model.evaluate(source)["factorized_top_k/top_5_categorical_accuracy"] > 0.9


def test_string_ids_through_a_streaming_vocabulary(tmp_path, one_thread):
    """Raw string ids in Parquet, encoded on the fly, train exactly like ids encoded in memory."""
    raw = interactions(1000)
    names = {"user": np.array([f"u{u}" for u in raw["user"]], dtype=object),
             "item": np.array([f"i{i}" for i in raw["item"]], dtype=object)}
    path = write_parquet(tmp_path / "d.parquet", names, row_group_size=200)
    lookups = {c: fit_streaming_vocabulary(path, c) for c in ("user", "item")}
    in_memory = {c: StringLookup().fit(names[c]) for c in ("user", "item")}
    assert all(lookups[c].get_vocabulary() == in_memory[c].get_vocabulary() for c in lookups)
    source = ParquetSource(path, ["user", "item"], encoders=lookups, chunk_rows=128)

    def model_fit(data):
        torch.manual_seed(0)
        model = TwoTower(num_users=21, num_items=16)
        return model.fit(data, epochs=2, batch_size=64, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.5),
                         shuffle=False, verbose=False).history["loss"]

    assert model_fit(source) == model_fit(Columns({c: in_memory[c](names[c]) for c in names}))
