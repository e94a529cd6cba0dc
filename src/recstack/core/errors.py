"""Exceptions that recstack raises for problems a user can fix.

Every message says what was wrong and what to do about it. The classes also
derive from the built-in exception a caller would expect (``ValueError``,
``FileNotFoundError``, ...) so generic handlers keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence


class RecstackError(Exception):
    """Base class of every error recstack raises on purpose."""


class DataError(RecstackError, ValueError):
    """Input data is malformed: a bad row, an unknown column, an empty table."""


class DataNotFoundError(RecstackError, FileNotFoundError):
    """A dataset is neither on disk nor downloadable."""


class ChecksumError(RecstackError, ValueError):
    """A downloaded or cached file does not have the expected SHA-256."""


class ConfigError(RecstackError, ValueError):
    """A configuration value or argument combination is invalid."""


class ShapeError(RecstackError, ValueError):
    """Tensors have incompatible shapes (e.g. query and candidate embedding widths differ)."""


class NotFittedError(RecstackError, RuntimeError):
    """A preprocessing layer was used before ``fit`` (or before loading a vocabulary)."""


class UsageError(ConfigError):
    """A command-line combination that cannot work (the CLI exits with code 2)."""


def suggest(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options`` (case-insensitive fallback), or ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""
