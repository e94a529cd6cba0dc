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


class ColumnNotFoundError(DataError, KeyError):
    """A batch or table has no column of the requested name (also a ``KeyError``)."""

    __str__ = Exception.__str__  # KeyError would print the message in quotes


class IdOutOfRangeError(DataError, IndexError):
    """Integer ids outside an embedding table's rows ``[0, vocabulary size)``."""


class IdDtypeError(DataError, TypeError):
    """Ids that are not an integer tensor (e.g. float ids read from a CSV)."""


class UnsafeFileError(DataError):
    """A file that would have to be unpickled (or is not a tensor file at all): refused."""


class DivergedError(RecstackError, FloatingPointError):
    """Training produced a non-finite (NaN or infinite) loss, gradient or parameter.

    Raised by :meth:`recstack.Model.fit` before the optimizer applies a non-finite gradient.
    Attributes (for programs, e.g. the CLI's run status):

    * ``epoch``, ``step``: where (1-based; ``step`` counts the epoch's batches, None when
      the problem was found at the end of the epoch), ``global_step``: optimizer steps so far
      in this ``fit`` call;
    * ``quantity``: "loss", "regularization_loss", "gradient" or "parameters";
    * ``names``: the parameters with a non-finite gradient (or value);
    * ``value``: the non-finite loss value, when the loss was;
    * ``last_finite_epoch``: the last completed epoch (all finite), ``initial_epoch`` if none;
    * ``history``: the :class:`~recstack.training.History` of the finite epochs of this call.
    """

    def __init__(self, message: str, *, epoch: int, step: int | None, global_step: int, quantity: str,
                 names: Sequence[str] = (), value: float | None = None, last_finite_epoch: int = 0,
                 history: object = None):
        super().__init__(message)
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.quantity, self.names, self.value = quantity, list(names), value
        self.last_finite_epoch, self.history = last_finite_epoch, history

    def to_dict(self) -> dict[str, object]:
        """The attributes as JSON-ready values (``history`` left out; non-finite value as a string)."""
        return {"epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                "quantity": self.quantity, "names": self.names,
                "value": None if self.value is None else repr(self.value),
                "last_finite_epoch": self.last_finite_epoch}


def suggest(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options`` (case-insensitive fallback), or ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""
