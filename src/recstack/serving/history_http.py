"""``POST /v1/recommend`` on a next-item bundle: validation of history / user queries, the answer.

A query of a next-item bundle (one whose manifest has a "history" section) is exactly one of

* ``{"history": ["id", ...]}``: item ids, oldest first (strings or integers, at least one,
  at most ``max_history``); ids not in the catalogue are dropped and listed in the
  result's ``"dropped"`` (all dropped: the empty-history ranking, ``cold_start: true``);
* ``{USER_FIELD: "42"}``: the user's stored history (the bundle's user field, e.g.
  ``user_id``); a user the bundle has no history for is a 422 (``unknown_user``).

Both in one query is a 422 (``ambiguous_query``): the server does not guess which one wins.
The history's items are left out of the answer unless ``keep_history``. ``allow``,
``exclude`` and ``exclude_seen`` are refused on these bundles (422, ``not_supported``), and a
``history`` (or ``keep_history``) sent to a bundle without histories is a 422
(``history_not_supported``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .history import HistoryRecommendation, recommend_history
from .query import Bundle
from .schemas import RecommendRequest
from .settings import ApiError, ServerSettings

__all__ = ["answer_history_request", "check_not_history", "history_content", "parse_history_query"]

HISTORY_FIELD = "history"


def check_not_history(body: RecommendRequest, batch: list[dict[str, Any]]) -> None:
    """422 for a history (or keep_history) sent to a bundle that has no history encoder, and for
    a list as any other query value (the schema lets lists through for ``history`` only)."""
    for r, query in enumerate(batch):
        for name, value in query.items():
            if isinstance(value, list) and name != HISTORY_FIELD:
                raise ApiError(422, "invalid_request", f"query.{name}: must be a string, an integer or a finite "
                               f"number; got a list.", [{"field": f"query.{name}", "message": "got a list"}])
    if "keep_history" in body.model_fields_set or any(HISTORY_FIELD in q for q in batch):
        raise ApiError(422, "history_not_supported", "this bundle answers user queries, not histories (it was "
                       "not exported from a next-item model such as sasrec or gru4rec); send its query fields "
                       "instead.", [{"field": "query", "message": "history not supported by this bundle"}])


def parse_history_query(r: int, query: dict[str, Any], user_field: str, known_users: Any,
                        settings: ServerSettings) -> tuple[list[Any] | None, Any]:
    """(history, None) or (None, user id) for query ``r`` of a request (whose values the strict
    schema has already checked); ApiError (422) for what a next-item query must not be."""
    where = f"query {r}" if r else "query"
    extra = sorted(set(query) - {HISTORY_FIELD, user_field})
    if extra:
        raise ApiError(422, "unknown_query_field", f"{where}: unknown field(s) {extra}; a next-item query is "
                       f'{{"history": [item ids]}} or {{"{user_field}": id}}.',
                       [{"field": f"query.{name}", "message": "unknown field"} for name in extra])
    if HISTORY_FIELD in query and user_field in query:
        raise ApiError(422, "ambiguous_query", f'{where}: pass either "history" or "{user_field}", not both '
                       "(the server does not pick one).", [{"field": "query", "message": "both given"}])
    if HISTORY_FIELD in query:
        history = query[HISTORY_FIELD]
        if not isinstance(history, list):
            raise ApiError(422, "invalid_history", f'{where}: "history" must be a list of item ids (strings or '
                           f"integers), oldest first; got {type(history).__name__}.",
                           [{"field": "query.history", "message": "not a list"}])
        if not history:
            raise ApiError(422, "invalid_history", f'{where}: "history" is empty; pass at least one item id, or '
                           f'the "{user_field}" whose stored history to use.',
                           [{"field": "query.history", "message": "empty"}])
        if len(history) > settings.max_history:
            raise ApiError(422, "history_too_long", f"{where}: the history has {len(history)} items; the limit is "
                           f"{settings.max_history} (the model reads only its latest items: send those).",
                           [{"field": "query.history", "message": f"at most {settings.max_history} items"}])
        return history, None
    if user_field not in query:
        raise ApiError(422, "invalid_query", f'{where}: pass "history" (item ids) or "{user_field}".',
                       [{"field": "query", "message": "no history and no user"}])
    user = query[user_field]
    if isinstance(user, (list, float)):
        raise ApiError(422, "invalid_query", f'{where}: "{user_field}" takes an id (a string or an integer); got '
                       f"{user!r}.", [{"field": f"query.{user_field}", "message": "not an id"}])
    if int(known_users.lookup(np.asarray([str(user)]))[0]) < 0:
        raise ApiError(422, "unknown_user", f"{where}: the bundle stores no history for {user_field} {user!r}; "
                       'send the history itself ({"history": [...]}).',
                       [{"field": f"query.{user_field}", "message": "unknown user"}])
    return None, user


def answer_history_request(bundle: Bundle, body: RecommendRequest, batch: list[dict[str, Any]],
                           settings: ServerSettings) -> dict[str, Any]:
    """The response document of a valid next-item request (ApiError for an invalid one)."""
    refused = sorted(name for name in ("allow", "exclude", "exclude_seen") if name in body.model_fields_set)
    if refused:
        raise ApiError(422, "not_supported", f"{refused} are not supported by next-item bundles (the history's "
                       "items are excluded unless keep_history).",
                       [{"field": name, "message": "not supported"} for name in refused])
    store = bundle.history
    user_field = bundle.manifest["history"].get("user_field", "user_id")
    parsed = [parse_history_query(r, q, user_field, store.users, settings) for r, q in enumerate(batch)]
    recs = recommend_history(bundle, [h for h, _ in parsed], k=body.k, users=[u for _, u in parsed],
                             keep_history=body.keep_history)
    return history_content(bundle, recs)


def history_content(bundle: Bundle, recs: list[HistoryRecommendation]) -> dict[str, Any]:
    """The JSON document answering a next-item request (both request paths build it here)."""
    return {"results": [{"items": r.items, "scores": r.scores, "cold_start": r.fallback, "oov_fields": [],
                         "dropped": r.dropped, "history_length": r.history_length} for r in recs],
            "index": bundle.index.kind, "exact": True, "bundle": bundle.digest[:12]}
