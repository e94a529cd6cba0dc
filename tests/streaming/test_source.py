"""ParquetSource: same batches as Columns without shuffle; a seeded, complete shuffle; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pyarrow")

from recstack import Columns  # noqa: E402
from recstack.core.columns import BatchSource  # noqa: E402
from recstack.core.errors import ConfigError, DataError, DataNotFoundError  # noqa: E402
from recstack.streaming import HashingLookup, ParquetSource  # noqa: E402
from recstack.streaming.source import rebatch  # noqa: E402

from .helpers import interactions, write_parquet  # noqa: E402

COLUMNS = ["user", "item", "timestamp", "rating"]


@pytest.fixture
def data():
    return interactions(1000)


def _all(batches) -> dict[str, torch.Tensor]:
    batches = list(batches)
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _assert_same_batches(actual, expected) -> None:
    actual, expected = list(actual), list(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.keys() == e.keys()
        for k in a:
            assert a[k].dtype == e[k].dtype, k
            assert torch.equal(a[k], e[k]), k


@pytest.mark.parametrize("chunk_rows", [1, 50, 64, 300, 5000])
@pytest.mark.parametrize("batch_size", [1, 64, 100, 1000, 1500])
def test_unshuffled_batches_equal_columns(tmp_path, data, chunk_rows, batch_size):
    source = ParquetSource(write_parquet(tmp_path / "d.parquet", data, row_group_size=128), COLUMNS,
                           chunk_rows=chunk_rows)
    columns = Columns(data)
    for drop in (False, True):
        got = list(source.epoch_batches(batch_size, shuffle=False, seed=3, epoch=1, drop_remainder=drop))
        _assert_same_batches(got, columns.epoch_batches(batch_size, shuffle=False, seed=3, epoch=1,
                                                        drop_remainder=drop))
        assert len(got) == source.num_batches(batch_size, drop) == columns.num_batches(batch_size, drop)
        assert all(b["user"].shape[0] == batch_size for b in got[:-1])


def test_directory_of_files_reads_files_in_name_order_and_renames_columns(tmp_path, data):
    path = write_parquet(tmp_path / "dir", data, row_group_size=97, files=4)
    (path / "_SUCCESS").write_text("")  # Spark marker files are ignored
    source = ParquetSource(path, {"user": "u", "item": "i"}, chunk_rows=40)
    assert isinstance(source, BatchSource)
    assert source.num_rows == 1000 and source.num_row_groups == 4 * 3
    got = _all(source.epoch_batches(128, shuffle=False, seed=0, epoch=0))
    assert set(got) == {"u", "i"}
    assert torch.equal(got["u"], torch.as_tensor(data["user"]))
    assert torch.equal(got["i"], torch.as_tensor(data["item"]))


def test_float64_becomes_float32_like_columns(tmp_path, data):
    source = ParquetSource(write_parquet(tmp_path / "d.parquet", data), ["rating"])
    batch = next(iter(source.epoch_batches(10, shuffle=False, seed=0, epoch=0)))
    assert batch["rating"].dtype == torch.float32 == Columns(data)["rating"].dtype


@pytest.mark.parametrize("shuffle_buffer", [0, 100, 10_000])
def test_shuffle_is_a_permutation_seeded_by_seed_and_epoch(tmp_path, data, shuffle_buffer):
    data = {**data, "row": np.arange(1000)}
    source = ParquetSource(write_parquet(tmp_path / "d.parquet", data, row_group_size=128), ["row", "user"],
                           chunk_rows=50, shuffle_buffer=shuffle_buffer)

    def rows(seed, epoch, drop=False):
        batches = list(source.epoch_batches(64, shuffle=True, seed=seed, epoch=epoch, drop_remainder=drop))
        assert len(batches) == source.num_batches(64, drop)
        assert all(b["row"].shape[0] == 64 for b in batches[:-1])
        out = _all(batches)
        assert torch.equal(out["user"], torch.as_tensor(data["user"])[out["row"]])  # rows stay whole
        return out["row"]

    first = rows(seed=1, epoch=1)
    assert torch.equal(first.sort().values, torch.arange(1000))  # every row exactly once
    assert not torch.equal(first, torch.arange(1000))
    assert torch.equal(first, rows(seed=1, epoch=1))  # pure function of (seed, epoch)
    assert not torch.equal(first, rows(seed=1, epoch=2))
    assert not torch.equal(first, rows(seed=2, epoch=1))
    dropped = rows(seed=1, epoch=1, drop=True)
    assert len(dropped) == 1000 // 64 * 64 and len(set(dropped.tolist())) == len(dropped)


def test_shuffle_buffer_mixes_beyond_row_groups(tmp_path):
    """With a buffer larger than the data every row can land anywhere; with B = 0 rows stay in their chunk."""
    data = {"row": np.arange(4000)}
    path = write_parquet(tmp_path / "d.parquet", data, row_group_size=1000)
    small = _all(ParquetSource(path, ["row"], chunk_rows=100, shuffle_buffer=0)
                 .epoch_batches(4000, shuffle=True, seed=0, epoch=1))["row"]
    # Without a buffer, each block of 100 output rows is one chunk of 100 consecutive rows.
    blocks = small.view(40, 100)
    assert torch.equal(blocks.max(1).values - blocks.min(1).values, torch.full((40,), 99))
    big = _all(ParquetSource(path, ["row"], chunk_rows=100, shuffle_buffer=4000)
               .epoch_batches(4000, shuffle=True, seed=0, epoch=1))["row"]
    # A full buffer is a uniform shuffle: the first 1000 outputs span all four row groups.
    assert set((big[:1000] // 1000).tolist()) == {0, 1, 2, 3}


def test_rebatch_carries_remainders_across_chunks():
    chunks = [{"x": np.arange(a, b)} for a, b in [(0, 3), (3, 4), (4, 4), (4, 11)]]
    assert [b["x"].tolist() for b in rebatch(chunks, 4, False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert [b["x"].tolist() for b in rebatch(chunks, 4, True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_string_column_with_hashing_encoder(tmp_path):
    ids = np.array([f"user-{i % 37}" for i in range(500)], dtype=object)
    source = ParquetSource(write_parquet(tmp_path / "d.parquet", {"uid": ids}), {"uid": "user"},
                           encoders={"user": HashingLookup(1000, salt=5)}, chunk_rows=64)
    got = _all(source.epoch_batches(100, shuffle=False, seed=0, epoch=0))["user"]
    assert torch.equal(got, HashingLookup(1000, salt=5)(ids.tolist()))


# -- errors ------------------------------------------------------------------------------------
def test_missing_column_names_available_columns(tmp_path, data):
    path = write_parquet(tmp_path / "d.parquet", data)
    with pytest.raises(DataError, match=r"\['movie'\].*available columns: \['user', 'item', 'timestamp', 'rating'\]"):
        ParquetSource(path, ["user", "movie"])


def test_not_parquet_missing_path_and_empty_data(tmp_path, data):
    csv = tmp_path / "d.csv"
    csv.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="not a Parquet file"):
        ParquetSource(csv, ["user"])
    with pytest.raises(DataNotFoundError, match="No such Parquet file"):
        ParquetSource(tmp_path / "nope.parquet", ["user"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="No Parquet files"):
        ParquetSource(tmp_path / "empty_dir", ["user"])
    empty = write_parquet(tmp_path / "empty.parquet", {k: v[:0] for k, v in data.items()})
    with pytest.raises(DataError, match="has no rows"):
        ParquetSource(empty, ["user"])


def test_configuration_errors(tmp_path, data):
    path = write_parquet(tmp_path / "d.parquet", {**data, "name": np.array(["a"] * 1000, dtype=object)})
    with pytest.raises(ConfigError, match="chunk_rows"):
        ParquetSource(path, ["user"], chunk_rows=0)
    with pytest.raises(ConfigError, match="not batch columns"):
        ParquetSource(path, ["user"], encoders={"item": HashingLookup(10)})
    with pytest.raises(ConfigError, match="batch names must be unique"):
        ParquetSource(path, {"user": "x", "item": "x"})
    from recstack.features import StringLookup

    with pytest.raises(ConfigError, match="not fitted"):
        ParquetSource(path, ["name"], encoders={"name": StringLookup()})
    with pytest.raises(DataError, match="holds strings"):
        next(iter(ParquetSource(path, ["name"]).epoch_batches(10, shuffle=False, seed=0, epoch=0)))
    with pytest.raises(DataError, match="batch_size must be positive"):
        ParquetSource(path, ["user"]).epoch_batches(0, shuffle=False, seed=0, epoch=0)


def test_nulls_without_encoder_are_an_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user": pa.array([1, None, 3])}), tmp_path / "n.parquet")
    source = ParquetSource(tmp_path / "n.parquet", ["user"])
    with pytest.raises(DataError, match="1 null value"):
        list(source.epoch_batches(2, shuffle=False, seed=0, epoch=0))
    hashed = ParquetSource(tmp_path / "n.parquet", ["user"], encoders={"user": HashingLookup(8)})
    assert _all(hashed.epoch_batches(2, shuffle=False, seed=0, epoch=0))["user"][1] == 0


def test_files_with_narrower_types_are_cast_to_the_dataset_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"user": pa.array([1, 2], pa.int64())}), tmp_path / "d" / "a.parquet")
    pq.write_table(pa.table({"user": pa.array([3, 4, 5], pa.int32())}), tmp_path / "d" / "b.parquet")
    batches = list(ParquetSource(tmp_path / "d", ["user"]).epoch_batches(2, shuffle=False, seed=0, epoch=0))
    assert [b["user"].dtype for b in batches] == [torch.int64] * 3
    assert torch.cat([b["user"] for b in batches]).tolist() == [1, 2, 3, 4, 5]


def test_stopping_early_and_restarting_gives_the_same_batches(tmp_path, data):
    source = ParquetSource(write_parquet(tmp_path / "d.parquet", data, files=3), ["user"], chunk_rows=64,
                           shuffle_buffer=200)
    first = source.epoch_batches(50, shuffle=True, seed=4, epoch=2)
    head = [next(first)["user"] for _ in range(3)]
    first.close()
    again = list(source.epoch_batches(50, shuffle=True, seed=4, epoch=2))
    assert all(torch.equal(a, b["user"]) for a, b in zip(head, again))
