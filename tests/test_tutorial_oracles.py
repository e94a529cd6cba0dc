"""The shipped tutorial configs train the weights of the tutorials' hand-written models.

The oracles (tests/tutorial_models.py) are the TFRS tutorials' ``compute_loss`` models; the
config path is ``recstack train NAME`` (the generic two-tower kind, which scores each distinct
movie of a batch once with its multiplicity). Both start from ``torch.manual_seed(0)`` with the
user embedding created first, see the same vocabularies (sorted ids over all ratings) and the
same fixed batches of the tutorial's split, so they must end with the same weights: equal up to
float32 rounding (the in-batch softmax sums the same terms in another order, ~1e-7 after a few
steps), while training moves every table by far more (checked, so the tolerance means something).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack import Columns
from recstack.cli.main import main
from recstack.datasets import random_split, read_movielens_100k
from recstack.experiment.config_files import load_config
from recstack.experiment.saved_run import load_run
from recstack.features import StringLookup
from recstack.training.optimizers import Adagrad
from tutorial_models import MultiTaskModel, movielens_model

STEPS = ["--set", "training.epochs=2", "--set", "training.batch_size=512", "--set", "output.plots=false",
         "--progress", "quiet"]


def tutorial_data(directory, with_rating: bool = False):
    """The tutorial's split and encoding: ids looked up in sorted vocabularies of all ratings.

    (The tutorials take the title vocabulary from the movies table; on MovieLens 100K every
    movie is rated, so it is the same vocabulary. The synthetic movies table has unrated rows.)
    """
    ratings = read_movielens_100k(directory).ratings
    train, _ = random_split(ratings, train_fraction=0.8, seed=42)
    users = StringLookup(vocabulary=np.unique(ratings["user_id"].to_numpy()))
    titles = StringLookup(vocabulary=np.unique(ratings["movie_title"].to_numpy()))
    columns = {"user_id": users(train["user_id"].to_numpy()), "movie_title": titles(train["movie_title"].to_numpy())}
    if with_rating:
        columns["user_rating"] = torch.from_numpy(train["user_rating"].to_numpy(np.float32, copy=True))
    return Columns(columns), users.vocabulary_size(), titles.vocabulary_size()


def assert_same_weights(pairs: list[tuple[torch.Tensor, torch.Tensor]], initial: list[torch.Tensor]) -> None:
    """Config-path and oracle tensors agree to float32 rounding; training moved them by >= 1e-3."""
    for (mine, theirs), start in zip(pairs, initial):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
        assert float((theirs.detach() - start).abs().max()) > 1e-3


def train_config(name, directory, tmp_path, monkeypatch, *options):
    """``recstack train NAME --run-dir ... OPTIONS`` on the MovieLens files in ``directory``; the model."""
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(directory))
    run = tmp_path / name
    assert main(["train", name, "--run-dir", str(run), *options]) == 0
    return load_run(run).model


def basic_retrieval_pairs(directory, tmp_path, monkeypatch, steps: list[str], epochs: int, batch_size: int):
    config_model = train_config("basic-retrieval", directory, tmp_path, monkeypatch, *steps)
    train, num_users, num_titles = tutorial_data(directory)
    torch.manual_seed(0)
    oracle = movielens_model(num_users, num_titles, torch.arange(1, num_titles))
    initial = [oracle.user_model.weight.detach().clone(), oracle.movie_model.weight.detach().clone()]
    oracle.fit(train, epochs=epochs, batch_size=batch_size, optimizer=Adagrad(oracle.parameters(), lr=0.1),
               shuffle=False, verbose=False)
    assert train.num_rows > 2 * batch_size       # several steps, the last one short
    return [(config_model.query_tower.id_embedding.weight, oracle.user_model.weight),
            (config_model.candidate_tower.id_embedding.weight, oracle.movie_model.weight)], initial


def test_basic_retrieval_config_trains_the_tutorial_models_weights(synthetic_ml100k, tmp_path, monkeypatch,
                                                                   one_thread):
    assert_same_weights(*basic_retrieval_pairs(synthetic_ml100k, tmp_path, monkeypatch, STEPS, 2, 512))


@pytest.mark.real_data
def test_on_movielens_the_basic_retrieval_config_trains_the_tutorial_models_weights(real_movielens, tmp_path,
                                                                                    monkeypatch):
    """The tutorial's own batch size on the real data, one epoch (10 steps)."""
    steps = ["--set", "training.epochs=1", "--set", "evaluation.protocols=[all-items]", "--set", "output.plots=false",
             "--progress", "quiet"]
    batch_size = load_config("basic-retrieval").training.batch_size
    assert_same_weights(*basic_retrieval_pairs(real_movielens.source, tmp_path, monkeypatch, steps, 1, batch_size))


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 0.0)])
def test_multitask_config_trains_the_tutorial_models_weights(weights, synthetic_ml100k, tmp_path, monkeypatch,
                                                             one_thread):
    rating, retrieval = weights
    config_model = train_config("multitask", synthetic_ml100k, tmp_path, monkeypatch, *STEPS,
                                "--set", f"tasks.rating.weight={rating}", "--set", f"tasks.retrieval.weight={retrieval}")
    train, num_users, num_titles = tutorial_data(synthetic_ml100k, with_rating=True)
    torch.manual_seed(0)
    oracle = MultiTaskModel(num_users, num_titles, torch.arange(1, num_titles), rating, retrieval)
    tensors = [oracle.user_model.weight, oracle.movie_model.weight, *(d.weight for d in oracle.rating_model),
               *(d.bias for d in oracle.rating_model)]
    initial = [t.detach().clone() for t in tensors]
    oracle.fit(train, epochs=2, batch_size=512, optimizer=Adagrad(oracle.parameters(), lr=0.1), shuffle=False,
               verbose=False)
    pairs = [(config_model.query_tower.id_embedding.weight, oracle.user_model.weight),
             (config_model.candidate_tower.id_embedding.weight, oracle.movie_model.weight)]
    pairs += [(mine.weight, theirs.weight) for mine, theirs in zip(config_model.rating_head, oracle.rating_model)]
    pairs += [(mine.bias, theirs.bias) for mine, theirs in zip(config_model.rating_head, oracle.rating_model)]
    assert len(pairs) == 2 + 2 * 3
    assert_same_weights(pairs, initial)
