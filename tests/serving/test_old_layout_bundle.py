"""A bundle exported by the previous layout (tower types recorded as import paths) still loads and
answers what the code that wrote it answered (fixtures/old_layout_bundle/README.md): the same items in
the same order, and scores equal up to float32 rounding (matrix products round differently on CPUs
with different vector units, so bit-equality would test the machine, not the loader)."""

import json
from pathlib import Path

import pytest

from recstack.serving import load_bundle, read_manifest

FIXTURE = Path(__file__).parent / "fixtures" / "old_layout_bundle"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(FIXTURE / "bundle")


def test_the_fixture_is_a_format_1_bundle_with_import_path_tower_names():
    manifest = read_manifest(FIXTURE / "bundle")
    assert manifest["format_version"] == 1 and manifest["manifest_sha256"] == EXPECTED["digest"]
    tower = json.loads((FIXTURE / "bundle" / "query_tower.json").read_text())
    assert tower["config"]["layers"][1]["type"] == "recstack.cli.feature_towers.FeatureTower"


@pytest.mark.parametrize("case", EXPECTED["recommend"], ids=lambda c: f"{c['query']['user_id']}-{c['exclude_seen']}")
def test_recommendations_equal_the_old_code(bundle, case):
    got = bundle.recommend(case["query"], k=case["k"], exclude_seen=case["exclude_seen"])
    assert got.items == case["items"] and got.scores == pytest.approx(case["scores"], rel=1e-5)
    assert got.cold_start == case["cold_start"] and got.oov_fields == case["oov_fields"]


@pytest.mark.parametrize("case", EXPECTED["similar"], ids=lambda c: c["item"])
def test_similar_items_equal_the_old_code(bundle, case):
    got = bundle.similar(case["item"], k=case["k"])
    assert got.items == case["items"] and got.scores == pytest.approx(case["scores"], rel=1e-5)


def test_ratings_equal_the_old_code(bundle):
    for case in EXPECTED["predict"]:
        assert bundle.predict_rating(case["query"], case["items"]) == pytest.approx(case["ratings"], rel=1e-5)
