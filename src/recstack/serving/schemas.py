"""Request and response models of the HTTP API (pydantic, from the ``serve`` extra).

Requests are strict: nothing is coerced. ``k`` is a JSON integer (not ``true``,
not ``"5"``, not ``5.0``), ``exclude_seen`` a JSON boolean (not ``"yes"``), a query
value a string, an integer or a finite number (a boolean is refused, and a
float for an id field is refused by the bundle instead of becoming an unknown
user), item ids strings or integers. Requests forbid unknown fields, so a typo
(``"exlude_seen"``) is a 422 naming the field rather than a silently ignored
option. Limits that depend on the server's settings (k, batch size, list
lengths) are checked in the handlers with messages that quote the limit.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
QueryValue = StrictStr | StrictInt | FiniteFloat
ItemId = StrictStr | StrictInt
#: A query value of a next-item bundle's ``history`` field: item ids, oldest first.
QueryField = QueryValue | list[ItemId]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RecommendRequest(_Strict):
    """One query (``query``) or a batch (``queries``); the same k and filters for all."""

    query: dict[str, QueryField] | None = Field(
        None, description="Raw query fields, e.g. {\"user_id\": \"42\"}; for a next-item bundle "
        "{\"history\": [item ids, oldest first]} or the user id whose stored history is used.",
        examples=[{"user_id": "42"}, {"history": ["50", "172", "133"]}])
    queries: list[dict[str, QueryField]] | None = Field(
        None, description="A batch of queries (at most the server's max_batch).")
    k: StrictInt = Field(10, ge=1, description="Items per query (at most the server's max_k).")
    exclude_seen: StrictBool = Field(True, description="Drop items the query key already interacted with.")
    allow: list[ItemId] | None = Field(None, description="Only these item ids may be returned.")
    exclude: list[ItemId] | None = Field(None, description="Item ids never to return.")
    keep_history: StrictBool = Field(False, description="Next-item bundles: also return items of the history "
                                                        "(by default they are excluded).")

    @model_validator(mode="after")
    def _one_of(self) -> "RecommendRequest":
        if (self.query is None) == (self.queries is None):
            raise ValueError('pass exactly one of "query" (one query) or "queries" (a list of queries)')
        if self.queries is not None and len(self.queries) == 0:
            raise ValueError('"queries" is empty; pass at least one query')
        return self

    def batch(self) -> list[dict[str, QueryField]]:
        return [self.query] if self.query is not None else list(self.queries or [])


class Result(BaseModel):
    items: list[Any] = Field(description="Raw item ids, best first.")
    scores: list[float] = Field(description="Inner-product scores, descending.")
    cold_start: bool = Field(False, description="The query fell back to the out-of-vocabulary embedding.")
    oov_fields: list[str] = Field(default_factory=list, description="Query fields that were out of vocabulary.")
    dropped: list[Any] | None = Field(None, description="Next-item bundles: history item ids not in the catalogue, "
                                                        "left out of the history.")
    history_length: int | None = Field(None, description="Next-item bundles: items of the history the answer used.")


class RecommendResponse(BaseModel):
    results: list[Result]
    index: str = Field(description="Index kind that answered (brute_force, faiss_ivf, scann).")
    exact: bool = Field(description="Whether the index search is exact.")
    bundle: str = Field(description="Digest of the bundle that answered.")


class SimilarResponse(BaseModel):
    item: Any
    result: Result
    index: str
    exact: bool
    bundle: str


class PredictRequest(_Strict):
    query: dict[str, QueryValue] = Field(description="Raw query fields.", examples=[{"user_id": "42"}])
    items: list[ItemId] = Field(min_length=1, description="Item ids to rate for this query.")


class PredictResponse(BaseModel):
    items: list[Any]
    ratings: list[float]
    cold_start: bool
    oov_fields: list[str]
    bundle: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
