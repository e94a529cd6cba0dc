"""fit_streaming_vocabulary gives the layer StringLookup / IntegerLookup.fit gives in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pyarrow")

from recstack.core.errors import ConfigError, DataError  # noqa: E402
from recstack.features import IntegerLookup, StringLookup, layer_from_config  # noqa: E402
from recstack.streaming import ParquetSource, fit_streaming_vocabularies, fit_streaming_vocabulary  # noqa: E402

from .helpers import write_parquet  # noqa: E402


@pytest.fixture
def table(tmp_path):
    """Skewed string and integer ids (with ties in the counts and a literal OOV token), 5 files."""
    rng = np.random.default_rng(0)
    n = 5000
    ints = np.floor(rng.pareto(1.2, n) * 10).astype(np.int64)  # heavy tail: many ties at count 1
    ints[:7] = -1  # IntegerLookup's OOV token in the data
    names = np.array([f"m{k}" for k in ints], dtype=object)
    names[7:10] = "[UNK]"  # StringLookup's OOV token in the data
    columns = {"title": names, "movie": ints}
    return columns, write_parquet(tmp_path / "d", columns, row_group_size=300, files=5)


@pytest.mark.parametrize("order", ["sorted", "frequency"])
@pytest.mark.parametrize("max_tokens", [None, 2, 11, 50])
@pytest.mark.parametrize("num_oov_indices", [0, 1])
def test_streaming_vocabulary_equals_in_memory_fit(table, order, max_tokens, num_oov_indices):
    columns, path = table
    kwargs = dict(order=order, max_tokens=max_tokens, num_oov_indices=num_oov_indices)
    fitted = fit_streaming_vocabularies(path, ["title", "movie"], max_tokens, order=order,
                                        num_oov_indices=num_oov_indices, chunk_rows=128)
    for name, cls in (("title", StringLookup), ("movie", IntegerLookup)):
        expected = cls(**kwargs).fit(columns[name])
        assert type(fitted[name]) is cls
        assert fitted[name].get_vocabulary() == expected.get_vocabulary()
        assert fitted[name].get_config() == expected.get_config()


def test_min_count_and_transform_through_a_source(table):
    columns, path = table
    source = ParquetSource(path, {"title": "t"}, chunk_rows=256)
    lookup = fit_streaming_vocabulary(source, "t", min_count=3)  # batch name resolved to the raw column
    values, counts = np.unique(columns["title"].astype(str), return_counts=True)
    assert lookup.get_vocabulary() == ["[UNK]"] + [v for v, c in zip(values, counts) if c >= 3 and v != "[UNK]"]
    encoded = ParquetSource(path, {"title": "t"}, encoders={"t": lookup}, chunk_rows=256)
    got = torch.cat([b["t"] for b in encoded.epoch_batches(1000, shuffle=False, seed=0, epoch=0)])
    assert torch.equal(got, lookup(columns["title"]))


def test_saves_and_loads_like_any_layer(table):
    _, path = table
    lookup = fit_streaming_vocabulary(path, "title", max_tokens=20, order="frequency")
    again = layer_from_config(lookup.get_config())
    assert again.get_vocabulary() == lookup.get_vocabulary()
    assert type(StringLookup.from_json(lookup.to_json())) is StringLookup


def test_integers_as_strings_and_whole_floats_as_integers(tmp_path):
    ints = np.array([3, 10, 3, 200, 10, 3])
    path = write_parquet(tmp_path / "d.parquet", {"i": ints, "f": ints.astype(float), "g": ints + 0.5})
    assert fit_streaming_vocabulary(path, "i", kind="string").get_vocabulary() == \
        StringLookup().fit(ints).get_vocabulary()
    assert fit_streaming_vocabulary(path, "f", kind="integer").get_vocabulary() == [-1, 3, 10, 200]
    with pytest.raises(DataError, match="cannot be read as integers"):
        fit_streaming_vocabulary(path, "g", kind="integer")
    with pytest.raises(DataError, match="kind='integer' for whole-valued floats"):
        fit_streaming_vocabulary(path, "f")


def test_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": pa.array(["x", None]), "b": pa.array(["x", "y"])}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="1 null value"):
        fit_streaming_vocabulary(tmp_path / "n.parquet", "a")
    with pytest.raises(DataError, match=r"\['zzz'\] not in the Parquet data; available columns: \['a', 'b'\]"):
        fit_streaming_vocabulary(tmp_path / "n.parquet", "zzz")
    with pytest.raises(ConfigError, match="max_tokens"):
        fit_streaming_vocabulary(tmp_path / "n.parquet", "b", max_tokens=1)
    with pytest.raises(DataError, match="min_count=5"):
        fit_streaming_vocabulary(tmp_path / "n.parquet", "b", min_count=5)
