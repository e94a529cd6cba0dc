"""Serving: portable bundles (export / load_bundle), tower descriptions, and an HTTP server.

    recstack.serving.export(model, "bundle/", candidates=movies, features=features, seen=ratings)
    bundle = recstack.serving.load_bundle("bundle/")
    bundle.recommend({"user_id": "42"}, k=10)

Modules: ``manifest`` (schema, digests, validation), ``sandbox`` (the only way a
bundle's files are read), ``export``, ``bundle`` (load_bundle) + ``query`` (the
loaded Bundle's queries), ``tower_registry`` (towers as JSON), ``weights``, ``bundle_index``.
The HTTP server (``recstack.serving.server``) needs the ``serve`` extra
(fastapi, uvicorn) and is imported on demand.
"""

from ..models.serving_spec import ServingSpec, serving_spec
from .bundle import load_bundle
from .export import export
from .manifest import read_manifest, verify_bundle
from .query import Bundle, Recommendation, UnknownFieldError, UnknownItemError
from .sandbox import UnsafeBundleError
from .tower_registry import TOWERS, register_tower, registered_towers, tower_config, tower_from_config

__all__ = [
    "Bundle", "Recommendation", "ServingSpec", "TOWERS", "UnknownFieldError", "UnknownItemError", "UnsafeBundleError",
    "export", "load_bundle", "read_manifest", "register_tower", "registered_towers", "serving_spec", "tower_config",
    "tower_from_config", "verify_bundle",
]
