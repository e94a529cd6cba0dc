"""What a model must expose to be bundled: :class:`ServingSpec` and :func:`serving_spec`.

It lives with the models (not in ``recstack.serving``) so that a model can say
what it serves - ``MultiTaskModel.serving_spec()`` - without importing the
serving layer above it. ``recstack.serving.export`` reads the spec; nothing
here knows about bundles or files.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.errors import ConfigError
from .two_tower import InputSpec

__all__ = ["InputSpec", "ServingSpec", "serving_spec"]


@dataclass
class ServingSpec:
    """The parts of a model a bundle needs.

    Args:
        query_tower: module mapping query inputs to [B, d].
        query_inputs: column name (tensor input) or names (dict input) of the query tower.
        candidate_tower: module mapping candidate inputs to [B, d] (None when the
            candidate embeddings are passed to export directly).
        candidate_inputs: the same for the candidate tower.
        rating_head: optional module with rating = head(cat([query_emb, candidate_emb], 1)) -> [B] or [B, 1].
        kind: "two_tower", "multitask", "ranking", ... (recorded in the manifest).
    """

    query_tower: nn.Module
    query_inputs: InputSpec
    candidate_tower: nn.Module | None = None
    candidate_inputs: InputSpec | None = None
    rating_head: nn.Module | None = None
    kind: str = "two_tower"


def serving_spec(model: nn.Module | ServingSpec) -> ServingSpec:
    """ServingSpec of a model: its own ``serving_spec()`` if it has one, else read from a
    TwoTowerRetrieval-like model (``query_tower``, ``candidate_tower``, ``query_inputs``,
    ``candidate_inputs`` and an optional ``rating_head`` / ``rating_model`` attribute).

    Raises:
        ConfigError: the model has no ``serving_spec()`` and lacks one of those attributes.
    """
    if isinstance(model, ServingSpec):
        return model
    own = getattr(model, "serving_spec", None)
    if callable(own):
        spec = own()
        if not isinstance(spec, ServingSpec):
            raise ConfigError(f"{type(model).__name__}.serving_spec() must return a recstack.serving.ServingSpec.")
        return spec
    missing = [a for a in ("query_tower", "query_inputs", "candidate_tower", "candidate_inputs")
               if getattr(model, a, None) is None]
    if missing:
        raise ConfigError(
            f"cannot export a {type(model).__name__}: it lacks {missing}. Give the model a serving_spec() method "
            "returning recstack.serving.ServingSpec(query_tower=..., query_inputs=..., candidate_tower=..., ...).")
    head = getattr(model, "rating_head", None) or getattr(model, "rating_model", None)
    kind = "multitask" if head is not None else "two_tower"
    return ServingSpec(model.query_tower, model.query_inputs, model.candidate_tower, model.candidate_inputs,
                       rating_head=head, kind=kind)
