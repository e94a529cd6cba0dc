"""HashingLookup: the documented formula, stable across processes, collision rate as predicted."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pa = pytest.importorskip("pyarrow")

from recstack.core.errors import ConfigError, DataError  # noqa: E402
from recstack.features import layer_from_config  # noqa: E402
from recstack.streaming import (  # noqa: E402
    HashingLookup,
    collision_fraction,
    expected_collision_fraction,
    stable_hash64,
)

MASK = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def reference_bin(value, num_bins: int, salt: int = 0) -> int:
    """The module docstring's formula, one value at a time in plain Python integers."""
    if value is None:
        return 0
    if isinstance(value, str):
        key = 0
        for byte in value.encode("utf-8"):  # Horner form of sum_j (b_j + 1) P^(L-1-j)
            key = (key * 0x100000001B3 + byte + 1) & MASK
    else:
        key = value & MASK
    return 1 + _splitmix64(key ^ _splitmix64(salt & MASK)) % (num_bins - 1)


VALUES = ["", "a", "b", "ab", "ba", "\x00a", "user_123", "ünïcödé", "x" * 300, None]
INTS = [0, 1, -1, 2**63 - 1, -(2**63), 12345678901]


@pytest.mark.parametrize("salt", [0, 7, 2**64 - 1])
def test_matches_independent_reference_formula(salt):
    layer = HashingLookup(1009, salt=salt)
    assert layer(VALUES).tolist() == [reference_bin(v, 1009, salt) for v in VALUES]
    assert layer(INTS).tolist() == [reference_bin(v, 1009, salt) for v in INTS]


def test_golden_values_never_change():
    """Saved models depend on these bins (values from reference_bin): a change here is a breaking change."""
    assert HashingLookup(2**20)(["user_1", "user_2", "42"]).tolist() == [413047, 126503, 630068]
    assert HashingLookup(1000, salt=7)([0, 1, -1]).tolist() == [825, 761, 19]
    assert int(stable_hash64(np.array([5]))[0]) == 13168350753275463132


def test_same_bins_in_another_process():
    ids = [f"id{i}" for i in range(50)] + list(range(50))
    code = ("import json,sys; from recstack.streaming import HashingLookup; "
            "ids=json.loads(sys.argv[1]); print(json.dumps(HashingLookup(997, salt=3)(ids[:50]).tolist()"
            " + HashingLookup(997, salt=3)(ids[50:]).tolist()))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout
    here = HashingLookup(997, salt=3)(ids[:50]).tolist() + HashingLookup(997, salt=3)(ids[50:]).tolist()
    assert json.loads(out) == here


def test_every_input_form_gives_the_same_bins():
    strings = [f"item{i}" for i in range(200)]
    layer = HashingLookup(50)
    expected = layer(strings)
    for form in (np.array(strings), np.array(strings, dtype=object), pa.array(strings),
                 pa.array(strings, pa.large_string()), pa.array(strings).dictionary_encode(),
                 pa.chunked_array([strings[:70], strings[70:]]), pa.array(strings).slice(0)):
        assert torch.equal(layer(form), expected)
    assert torch.equal(layer(pa.array(strings).slice(30, 40)), expected[30:70])
    ints = np.arange(-100, 100)
    assert torch.equal(layer(torch.as_tensor(ints)), layer(ints))
    assert torch.equal(layer(pa.array(ints, pa.int32())), layer(ints))
    assert torch.equal(layer(ints.astype(float)), layer(ints))
    big = np.array([2**64 - 1, 2**63, 7], dtype=np.uint64)  # same key as the int64 with these bits
    assert torch.equal(layer(pa.array(big)), layer(big)) and torch.equal(layer(big), layer([-1, -(2**63), 7]))


def test_nulls_go_to_bin_zero_and_values_never_do():
    layer = HashingLookup(2)
    assert layer(["a", None, "b"]).tolist() == [1, 0, 1]
    assert layer([1.0, float("nan")]).tolist() == [1, 0]
    assert (HashingLookup(7)(list(range(1000))) > 0).all()
    assert layer([None, None]).tolist() == [0, 0]


@pytest.mark.parametrize("num_ids,num_bins", [(1000, 100_000), (20_000, 100_000), (50_000, 50_000),
                                              (100_000, 10_000)])
def test_collision_fraction_matches_the_formula(num_ids, num_bins):
    rng = np.random.default_rng(num_ids)
    ids = np.unique(rng.integers(0, 2**62, num_ids + 100))[:num_ids]
    measured = collision_fraction(HashingLookup(num_bins + 1)(ids))
    expected = expected_collision_fraction(num_ids, num_bins)
    assert expected == pytest.approx(1 - np.exp(-num_ids / num_bins), abs=1e-3)
    # Binomial standard error of a fraction of num_ids ids (ids are not independent, so 6 sd).
    assert abs(measured - expected) < 6 * np.sqrt(expected * (1 - expected) / num_ids) + 1e-3
    strings = np.array([f"user_{i}" for i in ids])
    assert abs(collision_fraction(HashingLookup(num_bins + 1, salt=1)(strings)) - expected) < \
        6 * np.sqrt(expected * (1 - expected) / num_ids) + 1e-3
    assert HashingLookup(num_bins + 1).expected_collision_fraction(num_ids) == expected


def test_collision_helpers_edge_cases():
    assert expected_collision_fraction(1, 10) == 0.0
    assert expected_collision_fraction(5, 1) == 1.0
    assert expected_collision_fraction(2, 2) == pytest.approx(0.5)
    assert collision_fraction([1, 2, 2, 3]) == pytest.approx(0.5)
    assert collision_fraction([]) == 0.0


def test_config_round_trip_and_errors():
    layer = HashingLookup(64, salt=9)
    again = layer_from_config(json.loads(layer.to_json()))
    assert isinstance(again, HashingLookup) and again.get_config() == {"class": "HashingLookup", "num_bins": 64,
                                                                      "salt": 9}
    assert torch.equal(again(["a", "b"]), layer(["a", "b"]))
    assert layer.vocabulary_size() == 64 and layer.fit(["x"]) is layer and layer.is_fitted
    with pytest.raises(ConfigError, match="num_bins"):
        HashingLookup(1)
    with pytest.raises(ConfigError, match="salt"):
        HashingLookup(8, salt="x")
    with pytest.raises(DataError, match="mixed"):
        HashingLookup(8)(["a", 5])
    with pytest.raises(DataError, match="non-integers"):
        HashingLookup(8)([1.5])


def test_hashing_lookup_loads_from_config_without_importing_streaming_first():
    """A saved FeatureSet with a HashingLookup reloads in a fresh process that never imported recstack.streaming."""
    import subprocess
    import sys

    code = ("import sys; from recstack.features.base import layer_from_config; "
            "assert 'recstack.streaming' not in sys.modules; "
            "layer = layer_from_config({'class': 'HashingLookup', 'num_bins': 16, 'salt': 3}); "
            "print(type(layer).__name__, layer.num_bins, layer.salt)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["HashingLookup", "16", "3"]
