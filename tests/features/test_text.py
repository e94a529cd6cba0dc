"""TextVectorization against a plain-Python (re + Counter) reference of the Keras pipeline."""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features import TextVectorization

PUNCT = re.compile("[%s]" % re.escape(string.punctuation))
ASCII_WS = re.compile(r"[ \t\n\r\x0b\x0c]+")


def reference_tokens(text: str) -> list[str]:
    """Keras default: lower, strip string.punctuation, split on (ASCII) whitespace."""
    return [t for t in ASCII_WS.split(PUNCT.sub("", text.lower())) if t]


def reference_vocab(texts: list[str], max_tokens: int | None = None) -> list[str]:
    counts = Counter(t for text in texts for t in reference_tokens(text))
    counts.pop("[UNK]", None)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return ranked if max_tokens is None else ranked[: max_tokens - 2]


def reference_ids(texts: list[str], vocab: list[str], length: int | None) -> np.ndarray:
    ids = {t: i + 2 for i, t in enumerate(vocab)}
    rows = [[ids.get(t, 1) for t in reference_tokens(text)] for text in texts]
    width = length or max(1, max((len(r) for r in rows), default=0))
    out = np.zeros((len(texts), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : min(len(r), width)] = r[:width]
    return out


def test_standardize_split_by_hand() -> None:
    layer = TextVectorization().fit(["Hello,   WORLD!!", "hello\tthe world.", "The end"])
    # counts: hello 2, world 2, the 2, end 1 -> ties ascending
    assert layer.get_vocabulary() == ["", "[UNK]", "hello", "the", "world", "end"]
    out = layer(["WORLD... hello?!", "  the  END  ", "don't stop"])
    assert out.dtype == torch.int64
    # "don't" -> "dont" (apostrophe removed, like Keras) -> OOV; "stop" -> OOV
    assert out.tolist() == [[4, 2], [3, 5], [1, 1]]
    assert layer.vocabulary_size() == 6


def test_random_strings_match_reference() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("abcABC xyz,.!?'-()  \t") + ["é", "É", "ß", "東"]
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 30))) for _ in range(500)]
    texts += texts[:100]  # repeated rows (the layer tokenizes distinct strings once)
    layer = TextVectorization().fit(texts)
    vocab = reference_vocab(texts)
    assert layer.get_vocabulary() == ["", "[UNK]"] + vocab
    queries = texts[::3] + ["ABC never-seen Tokens"]
    np.testing.assert_array_equal(layer(queries).numpy(), reference_ids(queries, vocab, None))
    np.testing.assert_array_equal(layer(queries).numpy(), reference_ids(queries, vocab, None))


def test_padding_and_truncation() -> None:
    layer = TextVectorization(vocabulary=["a", "b", "c"])
    out = layer(["a b c a b", "c", ""])
    assert out.tolist() == [[2, 3, 4, 2, 3], [4, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    fixed = TextVectorization(vocabulary=["a", "b", "c"], output_sequence_length=3)
    assert fixed(["a b c a b", "c", ""]).tolist() == [[2, 3, 4], [4, 0, 0], [0, 0, 0]]
    assert TextVectorization(vocabulary=["a"], output_sequence_length=4)(["a"]).shape == (1, 4)
    assert layer(["", ""]).shape == (2, 1)  # at least one column
    assert layer([]).shape == (0, 1)


def test_max_tokens_counts_padding_and_oov() -> None:
    texts = ["a a a b b c d", "b c"]  # a:3, b:3, c:2, d:1
    layer = TextVectorization(max_tokens=4).fit(texts)
    assert layer.get_vocabulary() == ["", "[UNK]", "a", "b"]
    assert layer.vocabulary_size() == 4
    assert layer(["d c b a"]).tolist() == [[1, 1, 3, 2]]


def test_inputs_series_bytes_ndarray() -> None:
    layer = TextVectorization(vocabulary=["toy", "story"])
    expected = [[2, 3], [3, 1]]
    assert layer(pd.Series(["Toy Story", "story x"])).tolist() == expected
    assert layer(np.array(["Toy Story", "story x"])).tolist() == expected
    assert layer([b"Toy Story", b"story x"]).tolist() == expected


def test_other_standardize_and_split_modes() -> None:
    lower = TextVectorization(standardize="lower").fit(["Hi, there", "hi"])
    assert lower.get_vocabulary() == ["", "[UNK]", "hi", "hi,", "there"]
    raw = TextVectorization(standardize=None).fit(["Hi hi"])
    assert raw.get_vocabulary() == ["", "[UNK]", "Hi", "hi"]
    chars = TextVectorization(split="character").fit(["abca", "b!"])
    # a:2, b:2, c:1 ("!" stripped)
    assert chars.get_vocabulary() == ["", "[UNK]", "a", "b", "c"]
    assert chars(["ab c", "zz"]).tolist() == [[2, 3, 1, 4], [1, 1, 0, 0]]  # space is a character
    whole = TextVectorization(split=None).fit(["Toy Story", "toy story!", "Heat"])
    assert whole.get_vocabulary() == ["", "[UNK]", "toy story", "heat"]
    assert whole(["TOY STORY", "", "Jumanji"]).tolist() == [[2], [0], [1]]


def test_control_characters_and_row_separators() -> None:
    # The batch is joined with an ASCII control character; rows that contain
    # every candidate separator force the halving fallback. Results must not change.
    separators = "".join(chr(c) for c in (*range(0, 9), *range(14, 32)))
    texts = [separators + " a", "b a", "a\x00 b\x01", "\x01 a"]
    layer = TextVectorization(vocabulary=["a", "b", "a\x00"])
    # tokens: [seps, a], [b, a], [a\x00, b\x01], [\x01, a]; lone control chars are OOV
    assert layer(texts).tolist() == [[1, 2], [3, 2], [4, 1], [1, 2]]
    fitted = TextVectorization().fit(texts)
    assert "\x01" not in fitted.get_vocabulary()
    assert fitted.get_vocabulary()[:3] == ["", "[UNK]", "a"]


def test_explicit_vocabulary_validation() -> None:
    layer = TextVectorization(vocabulary=["", "[UNK]", "x", "y"])  # get_vocabulary() form accepted
    assert layer.get_vocabulary() == ["", "[UNK]", "x", "y"]
    with pytest.raises(DataError, match="duplicated"):
        TextVectorization(vocabulary=["x", "y", "x"])
    with pytest.raises(DataError, match="reserved"):
        TextVectorization(vocabulary=["x", "[UNK]"])
    with pytest.raises(ConfigError, match="max_tokens"):
        TextVectorization(vocabulary=["x", "y"], max_tokens=3)


def test_errors() -> None:
    with pytest.raises(ConfigError):
        TextVectorization(max_tokens=2)
    with pytest.raises(ConfigError):
        TextVectorization(output_sequence_length=0)
    with pytest.raises(ConfigError):
        TextVectorization(standardize="upper")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TextVectorization(split="tab")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no tokens"):
        TextVectorization().fit(["", "  ", "!!"])
    with pytest.raises(DataError, match="1-D"):
        TextVectorization(vocabulary=["a"])([["a"], ["b"]])
    with pytest.raises(DataError, match="missing"):
        TextVectorization(vocabulary=["a"])(["a", None])
