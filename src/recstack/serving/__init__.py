"""Serving: portable bundles (export / load_bundle), tower descriptions, and an HTTP server.

    recstack.serving.export(model, "bundle/", candidates=movies, features=features, seen=ratings)
    bundle = recstack.serving.load_bundle("bundle/")
    bundle.recommend({"user_id": "42"}, k=10)

Modules: ``manifest`` (schema, digests, validation), ``sandbox`` (the only way a
bundle's files are read), ``export``, ``bundle`` (load_bundle) + ``query`` (the
loaded Bundle's queries), ``weights``, ``bundle_index``. Towers are stored as JSON by
:mod:`recstack.models.tower_codec` (re-exported here: ``TOWERS``, ``register_tower``, ``tower_config``, ...).
The HTTP server (``recstack.serving.server``) needs the ``serve`` extra
(fastapi, uvicorn) and is imported on demand.
"""

from ..models.serving_spec import ServingSpec, serving_spec
from ..models.tower_codec import TOWERS, register_tower, registered_towers, tower_config, tower_from_config
from .bundle import load_bundle
from .export import export
from .manifest import read_manifest, verify_bundle
from .query import Bundle, Recommendation, UnknownFieldError, UnknownItemError
from .sandbox import UnsafeBundleError

__all__ = [
    "Bundle", "Recommendation", "ServingSpec", "TOWERS", "UnknownFieldError", "UnknownItemError", "UnsafeBundleError",
    "export", "load_bundle", "read_manifest", "register_tower", "registered_towers", "serving_spec", "tower_config",
    "tower_from_config", "verify_bundle",
]
