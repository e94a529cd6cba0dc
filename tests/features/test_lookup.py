"""StringLookup / IntegerLookup: Keras index layout, vocabulary building, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features import IntegerLookup, StringLookup


# -- StringLookup ---------------------------------------------------------------------------
def test_explicit_vocabulary_indices_and_oov() -> None:
    layer = StringLookup(vocabulary=["b", "a", "c"])
    out = layer(["a", "b", "c", "zzz", "a"])
    # index 0 = OOV, vocabulary entry i -> i + 1 in the order given
    assert out.dtype == torch.int64
    assert out.tolist() == [2, 1, 3, 0, 2]
    assert layer.vocabulary_size() == 4
    assert layer.get_vocabulary() == ["[UNK]", "b", "a", "c"]


def test_fit_sorted_order_matches_np_unique() -> None:
    values = ["u42", "u7", "u100", "u7", "u42", "u9"]
    layer = StringLookup().fit(values)
    expected = np.unique(values).tolist()  # ['u100', 'u42', 'u7', 'u9']
    assert layer.get_vocabulary() == ["[UNK]"] + expected
    assert layer(values).tolist() == [expected.index(v) + 1 for v in values]
    assert layer.vocabulary_size() == len(expected) + 1


def test_fit_frequency_order_ties_by_value() -> None:
    values = ["c", "b", "a", "b", "c", "d", "c", "a"]  # c:3, a:2, b:2, d:1
    layer = StringLookup(order="frequency").fit(values)
    assert layer.get_vocabulary() == ["[UNK]", "c", "a", "b", "d"]


@pytest.mark.parametrize(
    ("order", "expected"),
    [("frequency", ["c", "a"]), ("sorted", ["a", "c"])],
)
def test_max_tokens_keeps_most_frequent_then_orders(order: str, expected: list[str]) -> None:
    values = ["c", "b", "a", "b", "c", "d", "c", "a"]  # c:3, a:2, b:2, d:1
    layer = StringLookup(order=order, max_tokens=3).fit(values)  # 3 = OOV + 2 tokens
    assert layer.get_vocabulary() == ["[UNK]"] + expected
    assert layer.vocabulary_size() == 3
    assert layer(["b", "d"]).tolist() == [0, 0]


def test_inputs_of_every_container_type() -> None:
    layer = StringLookup(vocabulary=["x", "y"])
    expected = [1, 2, 0]
    assert layer(["x", "y", "q"]).tolist() == expected
    assert layer(("x", "y", "q")).tolist() == expected
    assert layer(np.array(["x", "y", "q"])).tolist() == expected
    assert layer(np.array(["x", "y", "q"], dtype=object)).tolist() == expected
    assert layer(pd.Series(["x", "y", "q"])).tolist() == expected
    assert layer(pd.Series(["x", "y", "q"], dtype="category")).tolist() == expected
    assert layer([b"x", b"y", b"q"]).tolist() == expected  # bytes decoded as UTF-8
    assert layer(np.array([b"x", b"y", b"q"])).tolist() == expected
    assert layer([]).tolist() == []


def test_non_string_values_use_str_semantics() -> None:
    layer = StringLookup(vocabulary=["1", "2", "True"])
    assert layer([1, 2, 3]).tolist() == [1, 2, 0]
    assert layer(np.array([2, 1])).tolist() == [2, 1]
    assert layer(torch.tensor([1, 2])).tolist() == [1, 2]
    assert layer(["1", 2, b"2", True]).tolist() == [1, 2, 2, 3]  # mixed types


def test_unicode_bytes() -> None:
    layer = StringLookup(vocabulary=["Amélie", "東京"])
    assert layer(["東京".encode(), "Amélie".encode()]).tolist() == [2, 1]


def test_lookup_inverse() -> None:
    layer = StringLookup(vocabulary=["a", "b", "c"])
    inv = layer.lookup_inverse(torch.tensor([[3, 0], [1, 2]]))
    assert inv.shape == (2, 2)
    assert inv.tolist() == [["c", "[UNK]"], ["a", "b"]]
    assert layer.lookup_inverse(layer(["b", "nope"])).tolist() == ["b", "[UNK]"]
    with pytest.raises(DataError, match=r"\[0, 4\)"):
        layer.lookup_inverse([4])
    with pytest.raises(DataError, match=r"\[0, 4\)"):
        layer.lookup_inverse([-1])


def test_explicit_vocabulary_duplicates_rejected() -> None:
    with pytest.raises(DataError, match="duplicated.*'a'"):
        StringLookup(vocabulary=["a", "b", "a"])


def test_get_vocabulary_round_trips_as_vocabulary() -> None:
    layer = StringLookup(vocabulary=["a", "b"])
    again = StringLookup(vocabulary=layer.get_vocabulary())  # leading [UNK] is stripped
    assert again.get_vocabulary() == ["[UNK]", "a", "b"]
    with pytest.raises(DataError, match="reserved"):
        StringLookup(vocabulary=["a", "[UNK]"])


def test_literal_oov_token_in_data_is_not_a_token() -> None:
    layer = StringLookup().fit(["a", "[UNK]", "b"])
    assert layer.get_vocabulary() == ["[UNK]", "a", "b"]
    assert layer(["[UNK]"]).tolist() == [0]


def test_num_oov_indices_zero() -> None:
    layer = StringLookup(vocabulary=["a", "b"], num_oov_indices=0)
    assert layer(["b", "a"]).tolist() == [1, 0]
    assert layer.vocabulary_size() == 2
    assert layer.get_vocabulary() == ["a", "b"]
    assert layer.lookup_inverse([1, 0]).tolist() == ["b", "a"]
    unknown = ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
    with pytest.raises(DataError) as info:
        layer(["a"] + unknown + ["u1"])
    message = str(info.value)
    assert "8 value(s) not in the vocabulary (7 distinct)" in message
    assert "'u1', 'u2', 'u3', 'u4', 'u5'" in message and "'u6'" not in message


@pytest.mark.parametrize("kwargs", [{"num_oov_indices": 2}, {"order": "random"}, {"max_tokens": 1}])
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        StringLookup(**kwargs)


def test_explicit_vocabulary_larger_than_max_tokens() -> None:
    with pytest.raises(ConfigError, match="max_tokens=3"):
        StringLookup(vocabulary=["a", "b", "c"], max_tokens=3)


def test_missing_values_rejected() -> None:
    with pytest.raises(DataError, match="missing value"):
        StringLookup().fit(pd.Series(["a", None, "b"]))
    with pytest.raises(DataError, match="missing value"):
        StringLookup(vocabulary=["a"])(["a", float("nan")])


def test_fit_empty_rejected() -> None:
    with pytest.raises(DataError, match="no values"):
        StringLookup().fit([])


def test_many_values_vectorised_against_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 500, 20_000).astype(str)
    layer = StringLookup().fit(values)
    uniques = np.unique(values)
    expected = np.searchsorted(uniques, values) + 1  # sorted vocabulary: rank + 1
    np.testing.assert_array_equal(layer(values).numpy(), expected)


# -- IntegerLookup --------------------------------------------------------------------------
def test_integer_lookup_basic() -> None:
    layer = IntegerLookup().fit(np.array([30, 10, 20, 10]))
    assert layer.get_vocabulary() == [-1, 10, 20, 30]
    assert layer.vocabulary_size() == 4
    out = layer(np.array([10, 20, 30, 99]))
    assert out.dtype == torch.int64 and out.tolist() == [1, 2, 3, 0]
    assert layer(torch.tensor([30, 5])).tolist() == [3, 0]
    assert layer(pd.Series([20, 10])).tolist() == [2, 1]
    assert layer([10.0, 20.0]).tolist() == [1, 2]  # whole floats accepted
    inv = layer.lookup_inverse(torch.tensor([0, 3]))
    assert inv.dtype == np.int64 and inv.tolist() == [-1, 30]


def test_integer_lookup_frequency_and_max_tokens() -> None:
    values = [5, 5, 5, 7, 7, 3, 3, 1]  # 5:3, 3:2, 7:2, 1:1
    assert IntegerLookup(order="frequency").fit(values).get_vocabulary() == [-1, 5, 3, 7, 1]
    assert IntegerLookup(max_tokens=3).fit(values).get_vocabulary() == [-1, 3, 5]


def test_integer_lookup_large_ids_exact() -> None:
    big = [2**62 + 1, 2**62 + 2]
    layer = IntegerLookup(vocabulary=big)
    assert layer(np.array(big[::-1], dtype=np.int64)).tolist() == [2, 1]


def test_integer_lookup_errors() -> None:
    with pytest.raises(DataError, match="non-integers"):
        IntegerLookup().fit([1.5, 2.0])
    with pytest.raises(DataError, match="integer"):
        IntegerLookup().fit(["a", "b"])
    with pytest.raises(DataError, match="duplicated"):
        IntegerLookup(vocabulary=[1, 2, 1])
    with pytest.raises(DataError, match="missing"):
        IntegerLookup().fit(pd.Series([1, None, 2], dtype="Int64"))
    with pytest.raises(DataError, match="not in the vocabulary"):
        IntegerLookup(vocabulary=[1], num_oov_indices=0)([2])
    assert IntegerLookup(vocabulary=[-1, 4, 5]).get_vocabulary() == [-1, 4, 5]  # leading OOV stripped
