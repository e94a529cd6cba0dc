"""A shipped config that says its settings are a study's best trial holds exactly that trial.

The tuned configs (``ials-recbole``, ``multvae-recbole``, ``ensemble``, ``ensemble-neural-recbole``)
cite a ``recstack tune`` study committed under benchmarks/results/. Re-tuning one and forgetting to
copy the new best trial into the config (or the other way round) would leave the docs' claim
"selected on validation" untrue without any test noticing; these tests notice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from recstack.experiment.config_files import read_raw_config

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

#: committed study -> the shipped config whose settings are that study's best trial. (The
#: tutorial-split iALS study, tune_ials_tutorial.json, is left out on purpose: its best trial
#: tested below the shipped `ials` settings, so `ials.yaml` did not adopt it; docs/results.md.)
ADOPTED_STUDIES = {
    "tune_ials_recbole.json": "ials-recbole",
    "tune_multvae_recbole.json": "multvae-recbole",
    "tune_ensemble_tutorial.json": "ensemble",
    "tune_ensemble_neural_recbole.json": "ensemble-neural-recbole",
}


def _at(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"the config has no {dotted!r}"
        node = node[part]
    return node


def _same(config_value: Any, study_value: Any) -> bool:
    """Configs write tuned floats to 4 significant digits; anything else must match exactly."""
    if isinstance(study_value, float) and isinstance(config_value, (int, float)):
        return math.isclose(config_value, study_value, rel_tol=1e-3)
    return bool(config_value == study_value)


def _study(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.exists():   # benchmarks/ is not in the wheel; the tests run from the repository
        pytest.skip(f"{path} is not here")
    return json.loads(path.read_text())


@pytest.mark.parametrize("study_file,config_name", sorted(ADOPTED_STUDIES.items()))
def test_config_holds_its_studys_best_trial(study_file: str, config_name: str) -> None:
    study = _study(study_file)
    raw, _, _ = read_raw_config(config_name)
    assert study["config"] == config_name
    for key, value in study["best"]["params"].items():
        assert _same(_at(raw, key), value), f"{config_name}: {key} is {_at(raw, key)!r}, the study's best is {value!r}"


@pytest.mark.parametrize("study_file,config_name", sorted(ADOPTED_STUDIES.items()))
def test_config_declares_the_space_its_study_searched(study_file: str, config_name: str) -> None:
    study = _study(study_file)
    raw, _, _ = read_raw_config(config_name)
    declared = raw["tune"]["space"]
    assert set(declared) == set(study["space"])
    for key, searched in study["space"].items():
        assert set(declared[key]) == set(searched), key
        for field, value in searched.items():
            assert _same(declared[key][field], value), f"{config_name}: tune.space.{key}.{field}"
