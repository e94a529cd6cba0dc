"""Old spellings in configs that still work, each rewritten to the current one with a warning.

One place for all of them, so removing one later is one edit here. Currently: the evaluation
protocol "seed" (easily confused with random seeds) is called "all-items".
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

#: Old protocol names still accepted (with a ConfigDeprecationWarning) -> their new names.
DEPRECATED_PROTOCOLS = {"seed": "all-items"}


class ConfigDeprecationWarning(DeprecationWarning):
    """An old spelling in a config or on the command line that still works (the command line
    prints these as ``warning: ...``)."""


def upgrade_deprecated(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A raw config mapping with the protocol name "seed" rewritten to "all-items" (in
    ``evaluation.protocols``, ``evaluation.validation_protocol`` and reference metric keys), with
    one ConfigDeprecationWarning naming every place; ``source`` names the config in it."""
    found: list[str] = []

    def rename(value: Any, where: str) -> Any:
        if isinstance(value, str) and value in DEPRECATED_PROTOCOLS:
            found.append(where)
            return DEPRECATED_PROTOCOLS[value]
        return value

    def rename_keys(metrics: Any, where: str) -> Any:
        if not isinstance(metrics, Mapping):
            return metrics
        out = {}
        for key, value in metrics.items():
            protocol, sep, name = str(key).partition("/")
            new = rename(protocol, f"{where}.{key}") if sep else protocol
            out[f"{new}/{name}" if sep else key] = value
        return out

    evaluation = raw.get("evaluation")
    if isinstance(evaluation, Mapping):
        evaluation = dict(evaluation)
        if isinstance(evaluation.get("protocols"), list):
            evaluation["protocols"] = [rename(p, "evaluation.protocols") for p in evaluation["protocols"]]
        if "validation_protocol" in evaluation:
            evaluation["validation_protocol"] = rename(evaluation["validation_protocol"],
                                                       "evaluation.validation_protocol")
        raw["evaluation"] = evaluation
    reference = raw.get("reference")
    if isinstance(reference, Mapping):
        reference = dict(reference)
        if "metrics" in reference:
            reference["metrics"] = rename_keys(reference["metrics"], "reference.metrics")
        if isinstance(reference.get("variants"), list):
            reference["variants"] = [
                {**v, "metrics": rename_keys(v["metrics"], f"reference.variants[{i}].metrics")}
                if isinstance(v, Mapping) and "metrics" in v else v for i, v in enumerate(reference["variants"])]
        raw["reference"] = reference
    if found:
        warnings.warn(f"{source}: the evaluation protocol 'seed' is now called 'all-items' "
                      f"({', '.join(dict.fromkeys(found))}); 'seed' still works but will be removed.",
                      ConfigDeprecationWarning, stacklevel=3)
    return raw


__all__ = ["ConfigDeprecationWarning", "DEPRECATED_PROTOCOLS", "upgrade_deprecated"]
