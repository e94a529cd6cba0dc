"""HashingLookup: ids -> embedding rows by a stable hash, no vocabulary to fit or store.

The hash is defined here (not borrowed from Python's randomised ``hash()`` or
from a library whose hash may change between versions), so a value lands in
the same bin in every process, on every platform and in every release::

    key(int v)   = v as uint64 (two's complement)
    key(bytes b) = sum_j (b_j + 1) * P^(L-1-j)  mod 2^64     (b = UTF-8 bytes of a str, L = len(b),
                                                             P = 0x100000001B3, the FNV-64 prime)
    bin(v)       = 1 + splitmix64(key(v) XOR splitmix64(salt)) mod (num_bins - 1)
    bin(null)    = 0

``splitmix64`` is the finaliser of Steele et al.'s SplitMix64 generator
(a bijection on 64-bit words with full avalanche). Integers hash by value and
strings by bytes, so ``5`` and ``"5"`` usually land in different bins.

Collisions: with n distinct ids hashed uniformly into m bins, an id shares its
bin with at least one other id with probability ``1 - (1 - 1/m)^(n-1)``
(≈ ``1 - exp(-n/m)``); see :func:`expected_collision_fraction`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features.base import PREPROCESSING_LAYERS, PreprocessingLayer, to_1d_array, to_int_array

from ..core.arrow import pyarrow

__all__ = ["HashingLookup", "collision_fraction", "expected_collision_fraction", "stable_hash64"]

_MASK64 = (1 << 64) - 1
_PRIME = 0x100000001B3
_SPLITMIX_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_MUL2 = np.uint64(0x94D049BB133111EB)
# Strings are hashed in slices of this many rows: bounds the per-byte uint64 temporaries.
_STRING_SLICE_ROWS = 65_536

_powers_cache = np.ones(1, dtype=np.uint64)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on a uint64 array (wrapping arithmetic)."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _SPLITMIX_MUL1
    z ^= z >> np.uint64(27)
    z *= _SPLITMIX_MUL2
    z ^= z >> np.uint64(31)
    return z


def _prime_powers(n: int) -> np.ndarray:
    """``P^i mod 2^64`` for i < n (uint64), grown by doubling: log2(n) vector multiplies."""
    global _powers_cache
    while len(_powers_cache) < n:
        k = len(_powers_cache)
        step = np.uint64(pow(_PRIME, k, 1 << 64))
        _powers_cache = np.concatenate([_powers_cache, _powers_cache * step])
    return _powers_cache[:n]


def _byte_keys(array: Any) -> np.ndarray:
    """uint64 key of each entry of an Arrow string/binary array (entries at nulls are arbitrary).

    Vectorised over bytes: every byte contributes ``(b + 1) * P^(bytes after it in its
    string)``; a cumulative sum (mod 2^64) differenced at the string offsets adds them up.
    """
    pa = pyarrow()
    large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    offset_type = np.int64 if large else np.int32
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type, count=len(array) + 1,
                            offset=array.offset * np.dtype(offset_type).itemsize).astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    starts, ends = offsets[:-1] - lo, offsets[1:] - lo
    if hi == lo:  # only empty strings / nulls
        return np.zeros(len(array), dtype=np.uint64)
    data = np.frombuffer(data_buf, dtype=np.uint8)[lo:hi]
    lengths = ends - starts
    bytes_after = np.repeat(ends, lengths) - 1 - np.arange(hi - lo)
    terms = (data.astype(np.uint64) + np.uint64(1)) * _prime_powers(int(lengths.max()))[bytes_after]
    cumulative = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(terms, dtype=np.uint64)])
    return cumulative[ends] - cumulative[starts]  # wraps mod 2^64: exact


def _arrow_keys(array: Any, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 keys, bool null mask) of a pyarrow Array or ChunkedArray."""
    pa = pyarrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    kind = array.type
    if pa.types.is_dictionary(kind):
        # Hash each distinct value once, then gather by the dictionary codes.
        keys, _ = _arrow_keys(array.dictionary, layer)
        codes = array.indices.fill_null(0).to_numpy()
        return keys[codes], array.is_null().to_numpy(zero_copy_only=False)
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or \
            pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        parts = [_byte_keys(array.slice(i, _STRING_SLICE_ROWS))
                 for i in range(0, len(array), _STRING_SLICE_ROWS)]
        keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        return keys, nulls
    if pa.types.is_uint64(kind):  # as uint64 already, like NumPy uint64 input
        return array.fill_null(0).to_numpy().astype(np.uint64, copy=False), nulls
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        try:  # safe cast: fractional floats are errors
            ints = array.cast(pa.int64(), safe=True).fill_null(0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{layer} expects integer ids or strings; {kind} values failed: {exc}") from exc
        return ints.to_numpy().view(np.uint64), nulls
    raise DataError(f"{layer} hashes integers and strings (UTF-8 bytes); got Arrow type {kind}")


def _keys(values: Any, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 keys, bool null mask) of a 1-D batch: Arrow array, ndarray, list, Series or tensor."""
    pa = pyarrow()
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return _arrow_keys(values, layer)
    array = to_1d_array(values, layer)
    if array.dtype.kind in "iub":
        return array.astype(np.int64, copy=False).view(np.uint64), np.zeros(len(array), dtype=bool)
    if array.dtype.kind == "f":
        nulls = np.isnan(array)
        ints = to_int_array(np.where(nulls, 0.0, array), layer)
        return ints.view(np.uint64), nulls
    try:  # str / bytes / object (None = null): Arrow converts in C, no Python loop
        converted = pa.array(array, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{layer} expects a batch of integers or of strings; got mixed values ({exc})") from exc
    if pa.types.is_null(converted.type):  # all missing
        return np.zeros(len(array), dtype=np.uint64), np.ones(len(array), dtype=bool)
    return _arrow_keys(converted, layer)


def stable_hash64(values: Any, salt: int = 0) -> np.ndarray:
    """``splitmix64(key(v) XOR splitmix64(salt))`` for a 1-D batch, uint64 [n] (0 at nulls).

    See the module docstring for ``key``; the result is the same in every process.
    """
    keys, nulls = _keys(values, "stable_hash64")
    hashed = _mix(keys, salt)
    hashed[nulls] = 0
    return hashed


def _mix(keys: np.ndarray, salt: int) -> np.ndarray:
    """``splitmix64(key XOR splitmix64(salt))``, uint64 [n]."""
    salt_word = splitmix64(np.array([salt & _MASK64], dtype=np.uint64))[0]
    return splitmix64(keys ^ salt_word)


def expected_collision_fraction(num_ids: int, num_bins: int) -> float:
    """Expected fraction of ``num_ids`` distinct ids that share a bin with another id.

    Each other id misses a given id's bin with probability ``1 - 1/m``, so
    ``P(collide) = 1 - (1 - 1/m)^(n - 1) ≈ 1 - exp(-n / m)`` for uniform hashing of
    n ids into m bins (computed with log1p, exact for large m). E.g. n = m gives
    ≈ 0.632; n = m / 10 gives ≈ 0.095.
    """
    if num_bins < 1 or num_ids < 0:
        raise ConfigError(f"need num_bins >= 1 and num_ids >= 0; got {num_bins}, {num_ids}")
    if num_ids <= 1:
        return 0.0
    if num_bins == 1:
        return 1.0
    return -math.expm1((num_ids - 1) * math.log1p(-1.0 / num_bins))


def collision_fraction(bins: Any) -> float:
    """Measured fraction of ids whose bin holds at least one other id.

    Args:
        bins: the bin of each DISTINCT id, shape [n] (e.g. ``HashingLookup(...)(unique_ids)``).
    """
    bins = np.asarray(bins.cpu() if isinstance(bins, torch.Tensor) else bins).ravel()
    if len(bins) == 0:
        return 0.0
    _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse] > 1))


@PREPROCESSING_LAYERS.register("HashingLookup")
class HashingLookup(PreprocessingLayer):
    """Map ids (integers or strings) to ``[0, num_bins)`` by a stable hash; 0 = null.

    The hashing alternative to :class:`~recstack.features.StringLookup` when a
    vocabulary is too large to fit or must stay open (new ids appear after
    training): nothing is fitted, unseen ids get a bin like any other, and the
    price is collisions: distinct ids that share a bin share an embedding row.
    Values land in bins ``1..num_bins-1`` (formula in the module docstring);
    missing values (None / NaN / Arrow null) map to 0, like a mask index.

    Input: 1-D batch [n] of ints or strs (list / ndarray / Series / tensor /
    pyarrow Array; Arrow string columns are hashed without creating Python
    objects). Output: LongTensor [n]. Use ``vocabulary_size()`` (= num_bins) as
    the embedding table size.

    Args:
        num_bins: output size including the null bin, >= 2.
        salt: integer mixed into the hash; different salts give independent
            bin assignments (e.g. two hashes of one id to reduce collisions).

    Example::

        users = HashingLookup(num_bins=2**20)
        users.expected_collision_fraction(300_000)   # ≈ 0.25 of ids share a row
        nn.Sequential(users, nn.Embedding(users.vocabulary_size(), 32))(["u1", "u9"])
    """

    _state_hint: ClassVar[str] = "num_bins=..."

    def __init__(self, num_bins: int, salt: int = 0) -> None:
        super().__init__()
        if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
            raise ConfigError(f"HashingLookup: num_bins must be an int >= 2 (bin 0 is null); got {num_bins!r}")
        if isinstance(salt, bool) or not isinstance(salt, (int, np.integer)):
            raise ConfigError(f"HashingLookup: salt must be an int; got {salt!r}")
        self.num_bins = int(num_bins)
        self.salt = int(salt)

    @property
    def is_fitted(self) -> bool:
        return True  # stateless

    def fit(self, values: Any) -> HashingLookup:
        """No-op (nothing to learn); returns self so ``fit_transform`` works."""
        return self

    def vocabulary_size(self) -> int:
        """Number of indices produced (= num_bins, null bin included): the embedding table size."""
        return self.num_bins

    def transform(self, values: Any) -> torch.Tensor:
        """Values [n] -> LongTensor [n]: ``1 + hash mod (num_bins - 1)``, 0 for missing values."""
        keys, nulls = _keys(values, type(self).__name__)
        index = (_mix(keys, self.salt) % np.uint64(self.num_bins - 1)).astype(np.int64) + 1
        index[nulls] = 0
        return self._output(index)

    def expected_collision_fraction(self, num_ids: int) -> float:
        """:func:`expected_collision_fraction` for ``num_ids`` distinct ids in this layer's num_bins - 1 value bins."""
        return expected_collision_fraction(num_ids, self.num_bins - 1)

    def get_config(self) -> dict[str, Any]:
        return {"class": self.registered_name(), "num_bins": self.num_bins, "salt": self.salt}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> HashingLookup:
        return cls(num_bins=config["num_bins"], salt=config.get("salt", 0))

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, salt={self.salt}"
