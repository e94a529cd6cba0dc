"""Serving: portable bundles (export / load_bundle), tower descriptions, and an HTTP server.

    recstack.serving.export(model, "bundle/", candidates=movies, features=features, seen=ratings)
    bundle = recstack.serving.load_bundle("bundle/")
    bundle.recommend({"user_id": "42"}, k=10)

The HTTP server (``recstack.serving.server``) needs the ``serve`` extra
(fastapi, uvicorn) and is imported on demand.
"""

from .bundle import (
    Bundle,
    Recommendation,
    ServingSpec,
    UnknownFieldError,
    UnknownItemError,
    export,
    load_bundle,
    read_manifest,
    serving_spec,
    verify_bundle,
)
from .tower_registry import TOWERS, register_tower, registered_towers, tower_config, tower_from_config

__all__ = [
    "Bundle", "Recommendation", "ServingSpec", "TOWERS", "UnknownFieldError", "UnknownItemError", "export", "load_bundle",
    "read_manifest", "register_tower", "registered_towers", "serving_spec", "tower_config", "tower_from_config",
    "verify_bundle",
]
