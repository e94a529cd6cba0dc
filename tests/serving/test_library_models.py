"""Bundling the library's own models: feature towers, and the multi-task model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.features import FeatureSet, StringLookup
from recstack.index import BruteForce
from recstack.serving import export, load_bundle

from .conftest import TITLES, USERS


def test_feature_towers_round_trip_through_their_registered_name(tmp_path):
    """FeatureTowers (the towers of ``recstack train``) with side-feature tables, a time feature and
    an MLP head rebuild from the name "feature_tower" and their config; weights carry the tables."""
    from recstack.models.feature_tower import FeatureTower
    from recstack.models.two_tower import TwoTowerRetrieval
    from recstack.tasks import Retrieval

    fs = FeatureSet({"user_id": StringLookup(vocabulary=USERS)})
    fs.add("title_id", StringLookup(vocabulary=TITLES), "movie_title")
    torch.manual_seed(0)
    query = FeatureTower(fs["user_id"].vocabulary_size(), 8, categorical_sizes=[3], num_numeric=2,
                         layer_sizes=[16, 8], timestamp_buckets=5)
    query.set_feature_tables(categorical=torch.randint(0, 3, (len(USERS) + 1, 1)),
                             numeric=torch.randn(len(USERS) + 1, 2))
    query.fit_timestamps(torch.arange(0, 10_000, 7))
    cand = FeatureTower(fs["title_id"].vocabulary_size(), 8, text_vocab_size=20, text_length=3, layer_sizes=[8])
    cand.set_feature_tables(text=torch.randint(0, 20, (len(TITLES) + 1, 3)))
    model = TwoTowerRetrieval(query, cand, Retrieval(), query_inputs="user_id", candidate_inputs="title_id")
    path = export(model, tmp_path / "b", candidates=pd.DataFrame({"movie_title": TITLES}), features=fs)
    assert load_json(path / "query_tower.json")["type"] == "feature_tower"
    bundle = load_bundle(path)
    with torch.no_grad():
        q = query.eval()(fs["user_id"].transform(["u4", "u9"]))
        c = cand.eval()(fs["title_id"].transform(TITLES))
    scores, pos = BruteForce().build(None, c).search(q, k=6)
    recs = bundle.recommend([{"user_id": "u4"}, {"user_id": "u9"}], k=6)
    for r, rec in enumerate(recs):
        assert rec.items == [TITLES[i] for i in pos[r]]
        np.testing.assert_allclose(rec.scores, scores[r].numpy(), rtol=1e-5)


def load_json(path):
    return json.loads(path.read_text())


def test_multitask_model_with_its_rating_head(tmp_path):
    multitask = pytest.importorskip("recstack.models.multitask")
    users = StringLookup(vocabulary=USERS)
    items = StringLookup(vocabulary=TITLES)
    torch.manual_seed(3)
    model = multitask.MultiTaskModel(users.vocabulary_size(), items.vocabulary_size(),
                                     torch.arange(items.vocabulary_size()), embedding_dim=8, rating_layers=(16, 1),
                                     user_lookup=users, item_lookup=items)
    fs = FeatureSet({"user_id": users})
    fs.add("title_id", items, "movie_title")
    bundle = load_bundle(export(model, tmp_path / "mt", candidates=pd.DataFrame({"movie_title": TITLES}),
                                features=fs, candidate_key="movie_title"))
    _, _, expected = model.predict(["u1"] * 3, TITLES[:3])
    assert bundle.predict_rating({"user_id": "u1"}, TITLES[:3]) == expected.reshape(-1).tolist()
    with torch.no_grad():
        u = model.user_model(users(["u1"]))
        m = model.movie_model(items(TITLES))
    _, pos = BruteForce().build(None, m).search(u, k=5)
    assert bundle.recommend({"user_id": "u1"}, k=5).items == [TITLES[i] for i in pos[0]]
