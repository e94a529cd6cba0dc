"""A small two-tower model with fitted preprocessing, and bundles exported from it."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from recstack.features import FeatureSet, StringLookup
from recstack.layers import MLP, Embedding
from recstack.models.two_tower import TwoTowerRetrieval
from recstack.serving import export
from recstack.tasks import Retrieval

USERS = [f"u{i}" for i in range(60)]
TITLES = [f"Movie {i} ({1950 + i % 50})" for i in range(400)] + ["Face/Off (1997)"]


@pytest.fixture(scope="session")
def interactions():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"user_id": rng.choice(USERS[:50], 3000),         # u50..u59 never seen
                         "movie_title": rng.choice(TITLES, 3000)})


@pytest.fixture(scope="session")
def features(interactions):
    movies = pd.DataFrame({"movie_title": TITLES})
    fs = FeatureSet({"user_id": StringLookup()})
    fs.add("movie_title", StringLookup(), "movie_title")
    fs["user_id"].fit(USERS[:55])                 # u55..u59 are out of vocabulary
    fs["movie_title"].fit(movies["movie_title"])
    return fs


@pytest.fixture(scope="session")
def model(features):
    torch.manual_seed(0)
    query = nn.Sequential(Embedding(features["user_id"].vocabulary_size(), 16), MLP(16, [32, 8]))
    cand = Embedding(features["movie_title"].vocabulary_size(), 8)
    with torch.no_grad():
        for p in list(query.parameters()) + list(cand.parameters()):
            p.normal_()
    return TwoTowerRetrieval(query, cand, Retrieval(), query_inputs="user_id", candidate_inputs="movie_title")


@pytest.fixture(scope="session")
def movies():
    return pd.DataFrame({"movie_title": TITLES})


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, model, features, movies, interactions):
    return export(model, tmp_path_factory.mktemp("b") / "bundle", candidates=movies, features=features,
                  seen=interactions)
