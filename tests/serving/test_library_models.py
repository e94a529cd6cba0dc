"""Bundling the library's own models: feature towers with dict inputs, and the multi-task model."""

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.features import Discretization, FeatureSet, Normalization, StringLookup, TextVectorization
from recstack.index import BruteForce
from recstack.serving import export, load_bundle

from .conftest import TITLES, USERS


def test_feature_towers_round_trip_through_their_config_protocol(tmp_path):
    """QueryTower/CandidateTower rebuild from get_config/from_config; found by import path."""
    towers = pytest.importorskip("recstack.models.towers")
    from recstack.models.two_tower import TwoTowerRetrieval
    from recstack.tasks import Retrieval

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"user_id": rng.choice(USERS, 500), "timestamp": rng.integers(0, 10_000, 500),
                          "movie_title": rng.choice(TITLES, 500)})
    fs = FeatureSet({"user_id": StringLookup()})
    fs.add("timestamp_bucket", Discretization.equal_width(0, 10_000, 20), "timestamp")
    fs.add("timestamp_norm", Normalization(), "timestamp")
    fs.add("title_id", StringLookup(), "movie_title")
    fs.add("title_tokens", TextVectorization(max_tokens=200), "movie_title")
    fs.fit(table)
    fs["title_id"].set_vocabulary(TITLES)              # every candidate in vocabulary

    q_args = {"num_users": fs["user_id"].vocabulary_size(), "layer_sizes": [16, 8], "embedding_dim": 8,
              "num_timestamp_buckets": fs["timestamp_bucket"].num_buckets(), "use_timestamp": True}
    c_args = {"num_titles": fs["title_id"].vocabulary_size(), "layer_sizes": [16, 8], "embedding_dim": 8,
              "num_tokens": fs["title_tokens"].vocabulary_size(), "use_text": True}
    torch.manual_seed(0)
    query, cand = towers.QueryTower(**q_args), towers.CandidateTower(**c_args)
    model = TwoTowerRetrieval(query, cand, Retrieval(), query_inputs=["user_id", "timestamp_bucket", "timestamp_norm"],
                              candidate_inputs=["title_id", "title_tokens"])
    path = export(model, tmp_path / "b", candidates=pd.DataFrame({"movie_title": TITLES}), features=fs,
                  candidate_key="movie_title")
    bundle = load_bundle(path)
    assert bundle.query_fields == ["user_id", "timestamp"]
    requests = [{"user_id": "u4", "timestamp": 1234}, {"user_id": "u9", "timestamp": 9000}]
    with torch.no_grad():
        inputs = fs.transform({"user_id": ["u4", "u9"], "timestamp": [1234, 9000], "movie_title": TITLES[:2]})
        q = query({k: inputs[k] for k in ("user_id", "timestamp_bucket", "timestamp_norm")})
        c_in = fs.transform({"user_id": ["u0"] * len(TITLES), "timestamp": [0] * len(TITLES), "movie_title": TITLES})
        c = cand({"title_id": c_in["title_id"], "title_tokens": c_in["title_tokens"]})
    scores, pos = BruteForce().build(None, c).search(q, k=6)
    recs = bundle.recommend(requests, k=6)
    for r, rec in enumerate(recs):
        assert rec.items == [TITLES[i] for i in pos[r]]
        np.testing.assert_allclose(rec.scores, scores[r].numpy(), rtol=1e-5)


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
