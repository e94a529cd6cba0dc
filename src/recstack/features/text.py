"""TextVectorization: strings -> padded token-id sequences (Keras ``output_mode="int"``)."""

from __future__ import annotations

import string
from collections import Counter
from itertools import repeat
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features.base import PREPROCESSING_LAYERS, PreprocessingLayer, to_str_array

__all__ = ["TextVectorization"]

Standardize = Literal["lower_and_strip_punctuation", "lower", "strip_punctuation"] | None
Split = Literal["whitespace", "character"] | None

# Keras deletes the regex class "[%s]" % re.escape(string.punctuation): all ASCII
# punctuation. Deleting those bytes from UTF-8 is equivalent and much faster.
_PUNCTUATION_BYTES = string.punctuation.encode("ascii")
PAD_TOKEN = ""
OOV_TOKEN = "[UNK]"
PAD_ID, OOV_ID, FIRST_TOKEN_ID = 0, 1, 2
# Row separators for the joined batch: ASCII control characters that are not
# whitespace for bytes.split(), not punctuation and unchanged by lower().
_SEPARATORS = tuple(chr(c) for c in (*range(0, 9), *range(14, 32)))
# Never vocabulary tokens: padding, OOV, and the separator characters on their own.
_RESERVED = (PAD_TOKEN, OOV_TOKEN, *_SEPARATORS)
_STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation", None)
_SPLIT = ("whitespace", "character", None)


@PREPROCESSING_LAYERS.register("TextVectorization")
class TextVectorization(PreprocessingLayer):
    """Strings [n] -> LongTensor [n, L] of token ids, right-padded with 0.

    Pipeline (Keras semantics): standardize (``str.lower()``, then delete every
    character of ``string.punctuation``), split (on runs of ASCII whitespace,
    like ``tf.strings.split``), look up: 0 = padding ``''``, 1 = OOV ``'[UNK]'``,
    tokens from 2. Input: 1-D batch [n] of str / bytes (list / ndarray / Series). ``L = output_sequence_length`` (longer sequences truncated) or, if
    None, the longest sequence in the batch (at least 1).

    ``fit`` orders the vocabulary by frequency descending, ties by token
    ascending; ``max_tokens`` counts padding and OOV, so it keeps at most
    ``max_tokens - 2`` tokens. ``vocabulary_size() = tokens + 2``.

    Args:
        max_tokens: cap on ``vocabulary_size()``; must be >= 3.
        output_sequence_length: fixed output width L.
        standardize: "lower_and_strip_punctuation", "lower", "strip_punctuation" or None.
        split: "whitespace", "character" (every character, spaces included) or None (whole string).
        vocabulary: explicit tokens (a leading ``['', '[UNK]']`` is accepted and stripped).
    """

    _state_hint = "vocabulary=[...]"

    def __init__(
        self,
        max_tokens: int | None = None,
        output_sequence_length: int | None = None,
        standardize: Standardize = "lower_and_strip_punctuation",
        split: Split = "whitespace",
        vocabulary: Sequence[str] | np.ndarray | pd.Series | None = None,
    ) -> None:
        super().__init__()
        if standardize not in _STANDARDIZE:
            raise ConfigError(f"TextVectorization: standardize must be one of {_STANDARDIZE}, got {standardize!r}")
        if split not in _SPLIT:
            raise ConfigError(f"TextVectorization: split must be one of {_SPLIT}, got {split!r}")
        for name, value, low in (("max_tokens", max_tokens, 3), ("output_sequence_length", output_sequence_length, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
                raise ConfigError(f"TextVectorization: {name} must be None or an int >= {low}, got {value!r}")
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.output_sequence_length = None if output_sequence_length is None else int(output_sequence_length)
        self.standardize: Standardize = standardize
        self.split: Split = split
        self._vocab: np.ndarray | None = None
        self._ids: dict[bytes, int] = {}
        self._char_index = pd.Index([], dtype=np.int64)
        self._char_ids = np.zeros(0, np.int64)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    @property
    def is_fitted(self) -> bool:
        return self._vocab is not None

    def set_vocabulary(self, vocabulary: Sequence[str] | np.ndarray | pd.Series) -> None:
        """Use explicit tokens; they get ids 2, 3, ... in the given order."""
        tokens = to_str_array(vocabulary, "TextVectorization vocabulary")
        # Accept get_vocabulary() output: strip a leading pad and/or OOV entry.
        if len(tokens) and tokens[0] == PAD_TOKEN:
            tokens = tokens[1:]
        if len(tokens) and tokens[0] == OOV_TOKEN:
            tokens = tokens[1:]
        if len(tokens) == 0:
            raise DataError("TextVectorization: the vocabulary is empty")
        reserved = np.flatnonzero(pd.Index(tokens).isin(_RESERVED))
        if len(reserved):
            raise DataError(
                f"TextVectorization: token {tokens[reserved[0]]!r} is reserved ('' = padding, '[UNK]' = OOV "
                "may only lead the vocabulary; single ASCII control characters are never tokens)"
            )
        dup = pd.Index(tokens).duplicated()
        if dup.any():
            raise DataError(
                f"TextVectorization: the vocabulary has duplicated tokens, e.g. {pd.unique(tokens[dup])[:5].tolist()!r}"
            )
        if self.max_tokens is not None and len(tokens) + 2 > self.max_tokens:
            raise ConfigError(
                f"TextVectorization: {len(tokens)} tokens + padding + OOV exceeds max_tokens={self.max_tokens}"
            )
        self._set(tokens)

    def _set(self, tokens: np.ndarray) -> None:
        self._vocab = tokens
        # UTF-8 token -> id; b"" -> padding; separator k -> -1 - k (see _lookup).
        ids = {t.encode("utf-8", "surrogatepass"): i for i, t in enumerate(tokens.tolist(), start=FIRST_TOKEN_ID)}
        ids[b""] = PAD_ID
        ids.update({c.encode(): -1 - k for k, c in enumerate(_SEPARATORS)})
        self._ids = ids
        # Character split: single-character tokens by code point.
        single = np.array([len(t) == 1 for t in tokens.tolist()], dtype=bool)
        self._char_index = pd.Index([ord(t) for t in tokens[single].tolist()], dtype=np.int64)
        self._char_ids = (np.flatnonzero(single) + FIRST_TOKEN_ID).astype(np.int64)

    def _chunks(self, strings: np.ndarray) -> Iterator[tuple[int, int, list[bytes] | np.ndarray, int | None]]:
        """Standardize and split a batch. Yields ``(first_row, n_rows, stream, sep)``.

        The whole batch is joined with a separator ``sep`` (an ASCII control
        character absent from the text), standardized and split as ONE string:
        C-level ``str.lower`` / ``bytes.translate`` / ``bytes.split`` instead of a
        Python call per row. ``stream`` holds the tokens in order with ``_SEPARATORS[sep]``
        between rows: UTF-8 ``bytes`` tokens (whitespace / no split) or a uint32
        code-point array (character split). ``sep`` is None for a one-row chunk.
        If every candidate separator occurs in the text, the batch is halved.
        """
        pending = [(0, strings)]
        while pending:
            first, part = pending.pop(0)
            n = len(part)
            if n == 0:
                continue
            text, sep = _join(part)
            if text is None:  # every separator occurs: recurse on halves (n > 1 here)
                half = n // 2
                pending[:0] = [(first, part[:half]), (first + half, part[half:])]
                continue
            if self.standardize in ("lower", "lower_and_strip_punctuation"):
                text = text.lower()
            data = text.encode("utf-8", "surrogatepass")
            if self.standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
                data = data.translate(None, _PUNCTUATION_BYTES)  # UTF-8 never reuses ASCII bytes
            if self.split == "whitespace":
                if sep is not None:
                    marker = _SEPARATORS[sep].encode()
                    data = data.replace(marker, b" " + marker + b" ")
                stream: list[bytes] | np.ndarray = data.split()  # ASCII whitespace, like tf.strings.split
            elif self.split is None:
                stream = data.split(_SEPARATORS[sep].encode()) if sep is not None else [data]
            else:
                decoded = data.decode("utf-8", "surrogatepass")
                stream = np.frombuffer(decoded.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            yield first, n, stream, sep

    def fit(self, values: Any) -> TextVectorization:
        """Vocabulary = tokens by count descending, ties by token ascending, capped at max_tokens - 2."""
        # Tokenize each distinct string once, weighting its tokens by its multiplicity
        # (recommender tables repeat titles/queries a lot).
        row_codes, distinct = pd.factorize(to_str_array(values, "TextVectorization"))
        multiplicity = np.bincount(row_codes, minlength=len(distinct))
        counts: Counter[str] = Counter()
        all_distinct = len(distinct) == len(row_codes)
        for first, _, stream, sep in self._chunks(np.asarray(distinct, dtype=object)):
            if all_distinct and not isinstance(stream, np.ndarray):
                # No repeats: plain C-level counting; separators are dropped below as reserved.
                for token, count in Counter(stream).items():
                    counts[token.decode("utf-8", "surrogatepass")] += count
                continue
            if isinstance(stream, np.ndarray):  # character split: code points
                marker = ord(_SEPARATORS[sep]) if sep is not None else -1
                token_codes, uniques = pd.factorize(stream.astype(np.int64))
                is_marker = stream == marker
                to_str = [chr(c) for c in uniques.tolist()]
            else:
                token_codes, uniques = pd.factorize(np.asarray(stream, dtype=object))
                marker_bytes = _SEPARATORS[sep].encode() if sep is not None else None
                is_marker = (
                    token_codes == uniques.tolist().index(marker_bytes)
                    if marker_bytes is not None and self.split == "whitespace"
                    else np.zeros(len(token_codes), bool)
                )
                to_str = [t.decode("utf-8", "surrogatepass") for t in uniques.tolist()]
            if self.split is None:
                rows = np.arange(len(token_codes), dtype=np.int64)
            else:
                rows = np.cumsum(is_marker)[~is_marker]
                token_codes = token_codes[~is_marker]
            weights = multiplicity[first + rows]
            totals = np.bincount(token_codes, weights=weights, minlength=len(uniques))
            counts.update({t: int(c) for t, c in zip(to_str, totals.tolist()) if c})
        # Reserved: padding, OOV and the separator characters never become tokens.
        for reserved in _RESERVED:
            counts.pop(reserved, None)
        if not counts:
            raise DataError("TextVectorization.fit found no tokens (empty input or only empty strings)")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))  # distinct tokens only
        if self.max_tokens is not None:
            ranked = ranked[: self.max_tokens - 2]
        self._set(np.array([t for t, _ in ranked], dtype=object))
        return self

    def vocabulary_size(self) -> int:
        """Number of ids: tokens + 2 (padding and OOV); use as ``nn.Embedding`` size."""
        self._require_fitted()
        assert self._vocab is not None
        return len(self._vocab) + 2

    def get_vocabulary(self) -> list[str]:
        """Token for each id: ``['', '[UNK]', token_2, ...]``."""
        self._require_fitted()
        assert self._vocab is not None
        return [PAD_TOKEN, OOV_TOKEN] + self._vocab.tolist()

    def transform(self, values: Any) -> torch.Tensor:
        """Strings [n] -> LongTensor [n, L]: ids (0 pad, 1 OOV, 2.. tokens), right-padded."""
        self._require_fitted()
        # Each distinct string is tokenized once, then rows are gathered back.
        row_codes, distinct = pd.factorize(to_str_array(values, "TextVectorization"))
        strings = np.asarray(distinct, dtype=object)
        n = len(strings)
        all_rows, all_ids = [], []
        for first, _, stream, sep in self._chunks(strings):
            rows, ids = self._lookup(stream, sep)
            all_rows.append(rows + first)
            all_ids.append(ids)
        rows = np.concatenate(all_rows) if all_rows else np.zeros(0, np.int64)
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
        lengths = np.bincount(rows, minlength=n)
        starts = np.cumsum(lengths) - lengths
        column = np.arange(len(rows), dtype=np.int64) - starts[rows]  # position within its row
        width = self.output_sequence_length or max(int(lengths.max(initial=0)), 1)
        out = np.zeros((n, width), dtype=np.int64)
        fits = column < width  # truncation
        out[rows[fits], column[fits]] = ids[fits]
        return self._output(out[row_codes])

    def _lookup(self, stream: list[bytes] | np.ndarray, sep: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Token stream -> (row of each token within the chunk, token id); padding dropped."""
        if isinstance(stream, np.ndarray):  # character split: code points
            is_marker = stream == ord(_SEPARATORS[sep]) if sep is not None else np.zeros(len(stream), bool)
            positions = self._char_index.get_indexer(stream.astype(np.int64))
            codes = np.where(positions < 0, OOV_ID, self._char_ids[positions])
        else:
            # One C-level pass of dict.get over the stream; separator candidates
            # map to -1 - k so the chosen one is recognisable and the rest are OOV.
            codes = np.fromiter(map(self._ids.get, stream, repeat(OOV_ID)), dtype=np.int64, count=len(stream))
            is_marker = codes == -1 - sep if sep is not None else np.zeros(len(codes), bool)
            codes = np.where(codes < 0, OOV_ID, codes)
        if self.split is None:
            rows = np.arange(len(codes), dtype=np.int64)  # one "token" per row, no markers
        else:
            rows = np.cumsum(is_marker)[~is_marker]
            codes = codes[~is_marker]
        keep = codes != PAD_ID  # empty rows with split=None
        return rows[keep], codes[keep]

    def get_config(self) -> dict[str, Any]:
        return {
            "class": self.registered_name(),
            "max_tokens": self.max_tokens,
            "output_sequence_length": self.output_sequence_length,
            "standardize": self.standardize,
            "split": self.split,
            "vocabulary": None if self._vocab is None else self._vocab.tolist(),
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> TextVectorization:
        return cls(
            max_tokens=config["max_tokens"],
            output_sequence_length=config["output_sequence_length"],
            standardize=config["standardize"],
            split=config["split"],
            vocabulary=config["vocabulary"],
        )

    def extra_repr(self) -> str:
        size = len(self._vocab) if self._vocab is not None else "unfitted"
        return f"tokens={size}, output_sequence_length={self.output_sequence_length}"


def _join(strings: np.ndarray) -> tuple[str | None, int | None]:
    """Join rows with the first separator that occurs in none of them -> (text, separator index).

    Returns (None, None) when all separators occur (the caller splits the batch);
    a single row needs no separator.
    """
    if len(strings) == 1:
        return strings[0], None
    text = _SEPARATORS[0].join(strings)
    if text.count(_SEPARATORS[0]) == len(strings) - 1:
        return text, 0
    for k, sep in enumerate(_SEPARATORS[1:], start=1):
        if sep not in text:
            return sep.join(strings), k
    return None, None
