"""StringLookup and IntegerLookup: map raw ids to contiguous integer indices.

Keras ``StringLookup`` / ``IntegerLookup`` semantics with ``mask_token=None``:
index 0 is the out-of-vocabulary (OOV) index and vocabulary token ``i``
(0-based) gets index ``i + 1``. With ``num_oov_indices=0`` tokens get ``0..N-1``
and unknown values are an error. Lookups are a hash join
(``pandas.Index.get_indexer``), so a 100k batch takes milliseconds.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features.base import PREPROCESSING_LAYERS, PreprocessingLayer, to_int_array, to_str_array

__all__ = ["StringLookup", "IntegerLookup"]

Order = Literal["sorted", "frequency"]


class _IndexLookup(PreprocessingLayer):
    """Shared implementation; subclasses define value coercion and the OOV token."""

    oov_token: ClassVar[Any]
    _state_hint = "vocabulary=[...]"

    def __init__(
        self,
        vocabulary: Sequence[Any] | np.ndarray | pd.Series | None = None,
        num_oov_indices: int = 1,
        order: Order = "sorted",
        max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if num_oov_indices not in (0, 1) or isinstance(num_oov_indices, bool):
            raise ConfigError(f"{name}: num_oov_indices must be 0 or 1, got {num_oov_indices!r}")
        if order not in ("sorted", "frequency"):
            raise ConfigError(f"{name}: order must be 'sorted' or 'frequency', got {order!r}")
        if max_tokens is not None and (
            not isinstance(max_tokens, (int, np.integer)) or max_tokens <= num_oov_indices
        ):
            raise ConfigError(
                f"{name}: max_tokens counts the OOV index, so it must be an int > "
                f"num_oov_indices={num_oov_indices}; got {max_tokens!r}"
            )
        self.num_oov_indices = int(num_oov_indices)
        self.order: Order = order
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self._vocab: np.ndarray | None = None  # real tokens only, index order
        self._index: pd.Index | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    # -- subclass hooks -----------------------------------------------------------------
    def _coerce(self, values: Any) -> np.ndarray:
        raise NotImplementedError

    def _to_json_tokens(self, vocab: np.ndarray) -> list[Any]:
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._vocab is not None

    def set_vocabulary(self, vocabulary: Sequence[Any] | np.ndarray | pd.Series) -> None:
        """Use an explicit vocabulary (tokens get indices in the given order).

        A leading OOV token (as returned by ``get_vocabulary()``) is accepted and
        stripped when ``num_oov_indices=1``. Duplicates raise DataError.
        """
        name = type(self).__name__
        tokens = self._coerce(vocabulary)
        if self.num_oov_indices == 1 and len(tokens) and tokens[0] == self.oov_token:
            tokens = tokens[1:]  # round trip of get_vocabulary()
        if len(tokens) == 0:
            raise DataError(f"{name}: the vocabulary is empty")
        if self.num_oov_indices == 1:
            reserved = np.flatnonzero(tokens == self.oov_token)
            if len(reserved):
                raise DataError(
                    f"{name}: the OOV token {self.oov_token!r} is reserved and may only be the first "
                    f"vocabulary entry; found at position {int(reserved[0]) + 1}"
                )
        dup = pd.Index(tokens).duplicated()
        if dup.any():
            dups = pd.unique(tokens[dup])
            raise DataError(
                f"{name}: the vocabulary has {len(dups)} duplicated token(s), e.g. "
                f"{dups[:5].tolist()!r}; pass unique values (e.g. np.unique(values))"
            )
        if self.max_tokens is not None and len(tokens) + self.num_oov_indices > self.max_tokens:
            raise ConfigError(
                f"{name}: vocabulary of {len(tokens)} tokens plus {self.num_oov_indices} OOV "
                f"index exceeds max_tokens={self.max_tokens}"
            )
        self._set(tokens)

    def _set(self, tokens: np.ndarray) -> None:
        self._vocab = tokens
        self._index = pd.Index(tokens)

    def fit(self, values: Any) -> _IndexLookup:
        """Build the vocabulary from the unique values of a 1-D batch.

        ``order="sorted"``: ascending (``np.unique`` order); ``"frequency"``: count
        descending, ties by value ascending. ``max_tokens`` keeps the
        ``max_tokens - num_oov_indices`` most frequent values (ties by value), then orders them.
        """
        name = type(self).__name__
        values = self._coerce(values)
        if len(values) == 0:
            raise DataError(f"{name}.fit got no values")
        counts = pd.Series(values).value_counts(sort=False)  # hash-based, O(n)
        if self.num_oov_indices == 1:
            # Like Keras adapt: a literal OOV token in the data maps to the OOV index.
            counts = counts[counts.index.to_numpy() != self.oov_token]
        uniques = counts.index.to_numpy()
        ascending = np.argsort(uniques, kind="stable")  # sorts uniques only
        uniques, freq = uniques[ascending], counts.to_numpy()[ascending]
        by_freq = np.argsort(-freq, kind="stable")  # stable: ties stay value-ascending
        if self.max_tokens is not None:
            keep = by_freq[: self.max_tokens - self.num_oov_indices]
        else:
            keep = by_freq
        if self.order == "sorted":
            keep = np.sort(keep)  # positions in the ascending array = value order
        if len(keep) == 0:
            raise DataError(f"{name}.fit found no tokens other than the OOV token")
        self._set(uniques[keep])
        return self

    def vocabulary_size(self) -> int:
        """Number of indices produced: N tokens + num_oov_indices (use as ``nn.Embedding`` size)."""
        self._require_fitted()
        assert self._vocab is not None
        return len(self._vocab) + self.num_oov_indices

    def get_vocabulary(self) -> list[Any]:
        """Token for each index: ``[OOV token] + tokens`` when num_oov_indices=1, else tokens."""
        self._require_fitted()
        assert self._vocab is not None
        tokens = self._to_json_tokens(self._vocab)
        return ([self.oov_token] if self.num_oov_indices else []) + tokens

    def transform(self, values: Any) -> torch.Tensor:
        """Values, shape [n] -> LongTensor [n] of indices.

        index = position in vocabulary + num_oov_indices; unknown -> 0 (or DataError
        when num_oov_indices=0).
        """
        self._require_fitted()
        assert self._index is not None
        values = self._coerce(values)
        positions = self._index.get_indexer(values)  # -1 where unknown
        if self.num_oov_indices == 0:
            unknown = positions < 0
            if unknown.any():
                missing = pd.unique(values[unknown])
                raise DataError(
                    f"{type(self).__name__} with num_oov_indices=0 got {int(unknown.sum())} value(s) "
                    f"not in the vocabulary ({len(missing)} distinct), e.g. {missing[:5].tolist()!r}; "
                    "use num_oov_indices=1 to map unknown values to index 0"
                )
            return self._output(positions.astype(np.int64, copy=False))
        return self._output(positions.astype(np.int64) + 1)  # -1 (unknown) -> 0

    def _inverse_table(self) -> np.ndarray:
        raise NotImplementedError

    def lookup_inverse(self, indices: Any) -> np.ndarray:
        """Indices of any shape (tensor / array / list) -> array of tokens, same shape (OOV -> OOV token)."""
        self._require_fitted()
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu" and idx.size:
            raise DataError(f"{type(self).__name__}.lookup_inverse expects integer indices, got {idx.dtype}")
        table = self._inverse_table()
        idx = idx.astype(np.int64)
        bad = (idx < 0) | (idx >= len(table))
        if bad.any():
            raise DataError(
                f"{type(self).__name__}.lookup_inverse: indices must be in [0, {len(table)}), "
                f"got e.g. {np.unique(idx[bad])[:5].tolist()!r}"
            )
        return table[idx]

    def get_config(self) -> dict[str, Any]:
        return {
            "class": self.registered_name(),
            "num_oov_indices": self.num_oov_indices,
            "order": self.order,
            "max_tokens": self.max_tokens,
            "vocabulary": None if self._vocab is None else self._to_json_tokens(self._vocab),
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> _IndexLookup:
        return cls(
            vocabulary=config["vocabulary"],
            num_oov_indices=config["num_oov_indices"],
            order=config["order"],
            max_tokens=config["max_tokens"],
        )

    def extra_repr(self) -> str:
        size = len(self._vocab) if self._vocab is not None else "unfitted"
        return f"tokens={size}, num_oov_indices={self.num_oov_indices}, order={self.order!r}"


@PREPROCESSING_LAYERS.register("StringLookup")
class StringLookup(_IndexLookup):
    """Map strings to indices: OOV -> 0, vocabulary token i -> i + 1 (Keras, mask_token=None).

    Input: 1-D batch [n] of str (bytes decoded as UTF-8; other scalars via ``str()``),
    as list / tuple / ndarray / pandas Series. Output: LongTensor [n] in
    ``[0, vocabulary_size())``.

    Args:
        vocabulary: explicit tokens (no duplicates); otherwise call ``fit``.
        num_oov_indices: 1 (unknown -> 0) or 0 (unknown -> DataError).
        order: vocabulary order after ``fit``: "sorted" (ascending) or "frequency".
        max_tokens: cap on ``vocabulary_size()`` (counts the OOV index, as in Keras).

    Example::

        nn.Sequential(StringLookup(vocabulary=ids), nn.Embedding(len(ids) + 1, 32))(["u1", "u9"])
    """

    oov_token: ClassVar[str] = "[UNK]"

    def _coerce(self, values: Any) -> np.ndarray:
        return to_str_array(values, type(self).__name__)

    def _to_json_tokens(self, vocab: np.ndarray) -> list[Any]:
        return vocab.tolist()

    def _inverse_table(self) -> np.ndarray:
        assert self._vocab is not None
        prefix = [self.oov_token] if self.num_oov_indices else []
        return np.asarray(prefix + self._vocab.tolist(), dtype=str)


@PREPROCESSING_LAYERS.register("IntegerLookup")
class IntegerLookup(_IndexLookup):
    """Map integer ids (int64) to indices: OOV -> 0, vocabulary token i -> i + 1.

    Input: 1-D batch [n] of integers (whole-valued floats accepted) as list /
    ndarray / Series / tensor. Output: LongTensor [n]. The OOV entry of
    ``get_vocabulary()`` / ``lookup_inverse`` is -1 (Keras convention), so with
    ``num_oov_indices=1`` a literal -1 in the data is treated as unknown.
    """

    oov_token: ClassVar[int] = -1

    def _coerce(self, values: Any) -> np.ndarray:
        return to_int_array(values, type(self).__name__)

    def _to_json_tokens(self, vocab: np.ndarray) -> list[Any]:
        return [int(v) for v in vocab.tolist()]

    def _inverse_table(self) -> np.ndarray:
        assert self._vocab is not None
        prefix = np.array([self.oov_token] if self.num_oov_indices else [], dtype=np.int64)
        return np.concatenate([prefix, self._vocab])
