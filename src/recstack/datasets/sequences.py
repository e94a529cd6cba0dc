"""Per-user interaction sequences and the next-item evaluation protocols built on them.

From any interaction table given as parallel integer-encoded arrays (user, item, timestamp;
item ids 1-based as :class:`~recstack.features.StringLookup` encodes them, 0 = padding /
out-of-vocabulary) this module builds:

* :class:`Histories`: every user's items in time order, ties between equal timestamps kept
  in table row order, as CSR (:class:`~recstack.core.id_lists.IdLists`, not deduplicated);
* :class:`TrainingSequences`: ``inputs`` / ``targets`` [N, L], left-padded with 0, where
  ``targets[r, t]`` is the item that followed ``inputs[r, t]`` (every prefix predicts its
  next item);
* :class:`EvalSequences`: one held-out ``target`` per row, the ``history`` [E, L] of the
  items before it (the last L, left-padded) and :meth:`EvalSequences.seen`, all the user's
  earlier items, for the "exclude history" option.

Protocols (both return a :class:`SequenceSplit`):

* :func:`leave_one_out`: per user with at least 3 interactions the last one is the test
  target, the second to last the validation target, the rest is training (users with fewer
  interactions are training only). The test history includes the validation item.
* :func:`temporal_split`: a global cut: interactions at ``t < cut`` train, targets at
  ``t >= cut`` are evaluated with all of the user's earlier interactions as history.

:func:`targets_after` builds :class:`EvalSequences` for a table that was split first
(``recstack train``'s leave-one-out split): each target follows the whole stored history
of its user.

:func:`~recstack.datasets.sampled_negatives.sample_negatives` draws the negatives of the *sampled* protocol (1 positive + N
negatives), a secondary protocol kept only to compare with papers that report it.

Everything is vectorised: one stable argsort of the table, then CSR offsets and
index arithmetic; no Python loop runs over users or rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from recstack.core.columns import Columns
from recstack.core.errors import ConfigError, DataError, ShapeError
from recstack.core.id_lists import IdLists

PAD = 0
_RESERVED_COLUMNS = ("user", "history", "target")


# --- arrays ------------------------------------------------------------------------------


def _array(values: Any, what: str, *, integer: bool) -> np.ndarray:
    """A 1-D numpy view of a tensor / array / list, checked for dtype and finiteness."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ShapeError(f"{what} must be 1-D (one entry per interaction); got shape {arr.shape}.")
    if integer:
        if arr.size and arr.dtype.kind not in "iu":
            raise DataError(f"{what} must be integer-encoded; got dtype {arr.dtype}. Encode raw ids with "
                            "recstack.features.StringLookup or IntegerLookup first.")
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{what} must be numeric; got dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DataError(f"{what} has a non-finite value ({arr[row]}) at row {row}; drop or fix that row.")
    return arr


def left_pad(values: np.ndarray, starts: np.ndarray, stops: np.ndarray, length: int) -> np.ndarray:
    """Rows ``values[starts[r]:stops[r]]``, keeping the last ``length`` of each, left-padded.

    Args:
        values: [n] (items, or a per-interaction feature).
        starts, stops: [R] slice bounds into ``values`` (``starts <= stops``).
        length: L, the output width.

    Returns:
        [R, L] of ``values.dtype``: row r ends with the slice's last ``min(L, stop - start)``
        values, in order; the columns before are 0 (:data:`PAD`).
    """
    starts = np.maximum(np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64) - length)
    stops = np.asarray(stops, dtype=np.int64)
    counts = stops - starts
    out = np.zeros((counts.shape[0], length), dtype=values.dtype)
    total = int(counts.sum())
    if total == 0:
        return out
    rows = np.repeat(np.arange(counts.shape[0]), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, length - np.repeat(counts, counts) + offsets] = values[np.repeat(starts, counts) + offsets]
    return out


def _check_length(max_length: int) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer; got {max_length!r}.")
    return int(max_length)


# --- histories -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Histories:
    """Every user's interactions in time order, in CSR form.

    Row r belongs to user ``users[r]`` and holds interactions ``indptr[r]:indptr[r + 1]`` of
    the aligned arrays ``items``, ``timestamps``, ``rows`` (position in the source table) and
    each ``features[name]``, ordered by (timestamp, source row).
    """

    users: np.ndarray
    lists: IdLists
    timestamps: np.ndarray
    rows: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def items(self) -> np.ndarray:
        """[n] item ids, user by user, each user's in time order."""
        return self.lists.ids

    @property
    def indptr(self) -> np.ndarray:
        """[U + 1] row pointers."""
        return self.lists.indptr

    @property
    def lengths(self) -> np.ndarray:
        """[U] interactions per user."""
        return self.lists.counts

    @property
    def num_users(self) -> int:
        return self.users.shape[0]

    def padded(self, max_length: int) -> np.ndarray:
        """[U, L] the last ``max_length`` items of every user, left-padded with 0."""
        L = _check_length(max_length)
        return left_pad(self.items, self.indptr[:-1], self.indptr[1:], L)

    def padded_features(self, max_length: int) -> dict[str, np.ndarray]:
        """{name: [U, L]} aligned with :meth:`padded`."""
        L = _check_length(max_length)
        return {k: left_pad(v, self.indptr[:-1], self.indptr[1:], L) for k, v in self.features.items()}

    def select(self, keep: np.ndarray) -> Histories:
        """The interactions where ``keep`` [n] is True, in the same order; every user stays a
        row (possibly empty), so row r is the same user in both."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.items.shape:
            raise ShapeError(f"keep must have one entry per interaction ({self.items.shape[0]}); got {keep.shape}.")
        indptr = np.zeros_like(self.indptr)
        np.cumsum(np.bincount(self.lists.rows[keep], minlength=self.num_users), out=indptr[1:])
        return Histories(self.users, IdLists(indptr, self.items[keep]), self.timestamps[keep], self.rows[keep],
                         {k: v[keep] for k, v in self.features.items()})

    def item_counts(self, num_items: int) -> np.ndarray:
        """[V] interactions per item (the popularity of each id; index 0 counts nothing)."""
        if self.items.size and int(self.items.max()) >= num_items:
            raise DataError(f"item id {int(self.items.max())} is >= num_items ({num_items}).")
        return np.bincount(self.items, minlength=int(num_items)).astype(np.int64)


def build_histories(
    users: Any,
    items: Any,
    timestamps: Any,
    *,
    features: Mapping[str, Any] | None = None,
    num_items: int | None = None,
) -> Histories:
    """Group an interaction table into time-ordered per-user sequences.

    Args:
        users: [n] integer user keys (any non-negative ints, e.g. encoded ids).
        items: [n] integer item ids in ``[1, num_items)``; 0 is reserved for padding.
        timestamps: [n] numeric, finite.
        features: optional {name: [n]} per-interaction values (e.g. ``genre[items]`` or a
            time bucket), carried along with the items and padded with 0.
        num_items: the item id space V (e.g. ``lookup.vocabulary_size()``); checked if given.

    Returns:
        :class:`Histories` with one row per distinct user, ascending by user key. Within a
        user, interactions are ordered by timestamp; equal timestamps keep table row order.
    """
    users_a = _array(users, "users", integer=True)
    items_a = _array(items, "items", integer=True)
    times_a = _array(timestamps, "timestamps", integer=False)
    n = users_a.shape[0]
    if items_a.shape[0] != n or times_a.shape[0] != n:
        raise ShapeError(f"users, items and timestamps differ in length: {n}, {items_a.shape[0]}, "
                         f"{times_a.shape[0]}.")
    if n == 0:
        raise DataError("the interaction table is empty (0 rows).")
    if int(items_a.min()) < 1:
        row = int(np.argmin(items_a))
        raise DataError(f"item id {int(items_a[row])} at row {row}: item ids start at 1 (0 is padding). Encode "
                        "them with StringLookup/IntegerLookup (index 0 is its OOV slot) or add 1.")
    if num_items is not None and int(items_a.max()) >= num_items:
        row = int(np.argmax(items_a))
        raise DataError(f"item id {int(items_a[row])} at row {row} is >= num_items ({num_items}).")
    feats: dict[str, np.ndarray] = {}
    for name, values in (features or {}).items():
        if name in _RESERVED_COLUMNS:
            raise ConfigError(f"feature name {name!r} is reserved (it names a sequence column); rename it.")
        arr = _array(values, f"feature {name!r}", integer=False)
        if arr.shape[0] != n:
            raise ShapeError(f"feature {name!r} has {arr.shape[0]} entries for {n} interactions.")
        feats[name] = arr
    # Two stable sorts: by time, then by user. Within a user, rows come out in
    # (timestamp, table row) order, whatever the dtypes of the keys.
    order = np.argsort(times_a, kind="stable")
    order = order[np.argsort(users_a[order], kind="stable")]
    sorted_users = users_a[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    indptr = np.r_[starts, n].astype(np.int64)
    return Histories(sorted_users[starts], IdLists(indptr, items_a[order]), times_a[order], order.astype(np.int64),
                     {k: v[order] for k, v in feats.items()})


# --- training and evaluation sequences ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainingSequences:
    """Rows of (inputs, targets) for training on every position.

    ``inputs`` [N, L] item ids (0 = pad), ``targets`` [N, L] with ``targets[r, t]`` the item
    that came right after ``inputs[r, t]`` (0 where ``inputs`` is padding), ``users`` [N]
    the user key of each row, ``features`` {name: [N, L]} aligned with ``inputs``.
    """

    users: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_targets(self) -> int:
        """Number of (prefix, next item) training pairs."""
        return int((self.targets != PAD).sum())

    def target_counts(self, num_items: int) -> np.ndarray:
        """[V] how often each item is a training target (for logQ correction)."""
        t = self.targets[self.targets != PAD]
        return np.bincount(t, minlength=int(num_items)).astype(np.int64)

    def columns(self) -> Columns:
        """``{"user", "history" (the inputs), "target", **features}`` for ``Model.fit``."""
        return Columns({"user": self.users, "history": self.inputs, "target": self.targets, **self.features})


def training_sequences(histories: Histories, max_length: int, *, windows: int | None = 1) -> TrainingSequences:
    """Cut each user's history into rows of at most ``max_length`` next-item steps.

    A user with m items has m - 1 steps (item k -> item k + 1). The most recent
    ``max_length`` steps form the first row; with ``windows`` > 1 (None = all) the earlier
    steps form further rows of ``max_length``, going back in time, the earliest one
    left-padded. Users with fewer than 2 items give no row. SASRec trains on the first
    window only (``windows=1``).
    """
    L = _check_length(max_length)
    if windows is not None and (isinstance(windows, bool) or not isinstance(windows, (int, np.integer))
                                or windows < 1):
        raise ConfigError(f"windows must be a positive integer or None (all); got {windows!r}.")
    steps = np.maximum(histories.lengths - 1, 0)
    per_user = -(-steps // L)
    if windows is not None:
        per_user = np.minimum(per_user, int(windows))
    owner = np.repeat(np.arange(histories.num_users), per_user)
    w = np.arange(owner.shape[0]) - np.repeat(np.cumsum(per_user) - per_user, per_user)
    base = histories.indptr[owner]
    stops = base + steps[owner] - w * L          # exclusive end of the inputs of window w
    starts = np.maximum(base, stops - L)
    items = histories.items
    return TrainingSequences(
        users=histories.users[owner],
        inputs=left_pad(items, starts, stops, L),
        targets=left_pad(items, starts + 1, stops + 1, L),
        features={k: left_pad(v, starts, stops, L) for k, v in histories.features.items()},
    )


@dataclass(frozen=True, eq=False)
class EvalSequences:
    """Held-out next items with their histories.

    ``users`` [E], ``target`` [E] the held-out item, ``history`` [E, L] the last L items
    before it (left-padded), ``features`` {name: [E, L]} aligned with ``history``,
    ``target_timestamp`` [E]. :meth:`seen` gives every earlier item of the user (not only
    the last L), for ranking with the user's history excluded.
    """

    users: np.ndarray
    history: np.ndarray
    target: np.ndarray
    target_timestamp: np.ndarray
    features: dict[str, np.ndarray]
    _items: np.ndarray
    _seen_start: np.ndarray
    _seen_stop: np.ndarray

    @property
    def num_rows(self) -> int:
        return self.target.shape[0]

    def seen(self) -> IdLists:
        """Row i: the distinct items the user interacted with before row i's target.

        The target itself is listed when the user had it before (a re-consumption); rankers
        never exclude a row's own target (see :func:`recstack.models.next_item_eval.target_ranks`).
        """
        counts = self._seen_stop - self._seen_start
        rows = np.repeat(np.arange(self.num_rows), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return IdLists.from_pairs(rows, self._items[np.repeat(self._seen_start, counts) + offsets], self.num_rows)

    def columns(self) -> Columns:
        """``{"user", "history", "target", **features}`` (``target`` is [E]): what
        :meth:`recstack.models.sequential.SequentialRetrieval.compute_loss` reads as a
        validation batch."""
        return Columns({"user": self.users, "history": self.history, "target": self.target, **self.features})


def _eval_at(histories: Histories, owner: np.ndarray, positions: np.ndarray, L: int) -> EvalSequences:
    """Eval rows whose targets are interactions ``positions`` [E] of users (rows) ``owner``."""
    base = histories.indptr[owner]
    items = histories.items
    return EvalSequences(
        users=histories.users[owner],
        history=left_pad(items, base, positions, L),
        target=items[positions],
        target_timestamp=histories.timestamps[positions],
        features={k: left_pad(v, base, positions, L) for k, v in histories.features.items()},
        _items=items, _seen_start=base, _seen_stop=positions,
    )


def targets_after(histories: IdLists, keys: Any, targets: Any, max_length: int, *,
                  target_timestamps: Any = None) -> EvalSequences:
    """Eval rows whose targets follow the *whole* stored history of their key.

    For pipelines that split first and keep each user's earlier items as time-ordered
    lists (e.g. the training and validation items of a leave-one-out split): row e's
    target ``targets[e]`` comes after every item of ``histories.row(keys[e])``, so its
    history is that row (the last ``max_length`` items, left-padded) and :meth:`EvalSequences.seen`
    all of it.

    Args:
        histories: per key, item ids in time order (not deduplicated, not sorted).
        keys: [E] rows of ``histories`` (keys outside it have an empty history).
        targets: [E] held-out item ids.
        max_length: L, the width of ``history``.
        target_timestamps: [E] (default zeros).
    """
    L = _check_length(max_length)
    keys_a = _array(keys, "keys", integer=True)
    targets_a = _array(targets, "targets", integer=True)
    if keys_a.shape != targets_a.shape:
        raise ShapeError(f"keys and targets differ in length: {keys_a.shape[0]}, {targets_a.shape[0]}.")
    times = (np.zeros(targets_a.shape[0]) if target_timestamps is None
             else _array(target_timestamps, "target_timestamps", integer=False))
    inside = (keys_a >= 0) & (keys_a < histories.num_rows)
    safe = np.where(inside, keys_a, 0)
    starts = histories.indptr[safe]
    stops = np.where(inside, histories.indptr[safe + 1], starts)
    return EvalSequences(users=keys_a, history=left_pad(histories.ids, starts, stops, L), target=targets_a,
                         target_timestamp=times, features={}, _items=histories.ids, _seen_start=starts,
                         _seen_stop=stops)


@dataclass(frozen=True, eq=False)
class SequenceSplit:
    """What a trainer and an evaluator need from one protocol.

    ``train_histories``: the training interactions per user (same rows as the full
    :class:`Histories`), for baselines and popularity counts; ``train``: the training
    sequences built from them; ``validation`` (None when the protocol has none) and
    ``test``: held-out targets; ``protocol``: its name.
    """

    protocol: str
    train_histories: Histories
    train: TrainingSequences
    validation: EvalSequences | None
    test: EvalSequences


def leave_one_out(histories: Histories, max_length: int, *, windows: int | None = 1) -> SequenceSplit:
    """The leave-one-out protocol (SASRec, BERT4Rec, RecBole ``LS: valid_and_test``).

    Per user with m >= 3 interactions: interaction m - 1 (the last by time, ties by row
    order) is the test target with history 0..m-2; interaction m - 2 is the validation
    target with history 0..m-3; interactions 0..m-3 are training. Users with m < 3 are
    training only and are not evaluated. Training rows come from
    :func:`training_sequences` (``max_length``, ``windows``).
    """
    L = _check_length(max_length)
    lengths = histories.lengths
    evaluated = np.flatnonzero(lengths >= 3)
    ends = histories.indptr[1:][evaluated]
    held_out = np.zeros(histories.items.shape[0], dtype=bool)
    held_out[ends - 1] = True
    held_out[ends - 2] = True
    train_histories = histories.select(~held_out)
    return SequenceSplit(
        protocol="leave_one_out",
        train_histories=train_histories,
        train=training_sequences(train_histories, L, windows=windows),
        validation=_eval_at(histories, evaluated, ends - 2, L),
        test=_eval_at(histories, evaluated, ends - 1, L),
    )


def _targets_in(histories: Histories, lo: float, hi: float | None, which: str, L: int) -> EvalSequences:
    """Eval rows for interactions with lo <= t (< hi), each with a non-empty history."""
    t = histories.timestamps
    inside = t >= lo if hi is None else (t >= lo) & (t < hi)
    owner = histories.lists.rows
    positions = np.flatnonzero(inside)
    if which == "first" and positions.size:
        # A user's first in-period interaction: its owner differs from the previous one's.
        who = owner[positions]
        positions = positions[np.r_[True, who[1:] != who[:-1]]]
    positions = positions[positions > histories.indptr[owner[positions]]]   # needs >= 1 earlier item
    return _eval_at(histories, owner[positions], positions, L)


def temporal_split(
    histories: Histories,
    test_start: float,
    max_length: int,
    *,
    validation_start: float | None = None,
    targets: Literal["first", "all"] = "first",
    windows: int | None = 1,
) -> SequenceSplit:
    """A global temporal split: no training interaction is later than any evaluated one.

    Training: interactions with ``t < validation_start`` (or ``t < test_start`` without a
    validation period). Test targets: interactions with ``t >= test_start``; validation
    targets: ``validation_start <= t < test_start``. ``targets="first"`` evaluates each
    user's first interaction of the period, ``"all"`` every one. A target's history is every
    interaction of the user before it in (timestamp, row) order, including earlier ones of
    the same period (they are in its past); targets without any earlier interaction (new
    users) are dropped.
    """
    L = _check_length(max_length)
    if targets not in ("first", "all"):
        raise ConfigError(f"targets must be 'first' or 'all'; got {targets!r}.")
    if validation_start is not None and not validation_start < test_start:
        raise ConfigError(f"validation_start ({validation_start}) must be before test_start ({test_start}).")
    cut = test_start if validation_start is None else validation_start
    train_histories = histories.select(histories.timestamps < cut)
    if train_histories.items.size == 0:
        raise DataError(f"no interaction is before the cut {cut}: the training set would be empty; choose a "
                        f"later cut (timestamps run from {histories.timestamps.min()} to {histories.timestamps.max()}).")
    test = _targets_in(histories, test_start, None, targets, L)
    if test.num_rows == 0:
        raise DataError(f"no evaluable interaction at or after test_start={test_start} (one with an earlier "
                        "interaction of the same user); choose an earlier cut.")
    validation = None if validation_start is None else _targets_in(histories, validation_start, test_start,
                                                                   targets, L)
    return SequenceSplit(protocol="temporal", train_histories=train_histories,
                         train=training_sequences(train_histories, L, windows=windows),
                         validation=validation, test=test)


# --- sampled protocol ------------------------------------------------------------------------


__all__ = [
    "PAD", "EvalSequences", "Histories", "SequenceSplit", "TrainingSequences", "build_histories", "leave_one_out",
    "left_pad", "targets_after", "temporal_split", "training_sequences",
]
