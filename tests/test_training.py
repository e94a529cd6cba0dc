"""The fit/evaluate loop on a tiny synthetic retrieval problem."""

import math

import numpy as np
import pytest
import torch

import recstack
from recstack import Columns
from recstack.layers import Embedding
from recstack.metrics import FactorizedTopK
from recstack.tasks import Retrieval
from recstack.training import EarlyStopping


class TwoTower(recstack.Model):
    def __init__(self, num_users=20, num_items=15, dim=8, l2=0.0):
        super().__init__()
        self.user = Embedding(num_users, dim, l2=l2)
        self.item = Embedding(num_items, dim)
        items = torch.arange(num_items)
        self.task = Retrieval(metrics=FactorizedTopK(recstack.TowerCandidates(self.item, items), items, ks=(1, 5)))

    def compute_loss(self, batch, training=False):
        return self.task(self.user(batch["user"]), self.item(batch["item"]), candidate_ids=batch["item"])


def synthetic(n=400, seed=0):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 20, n)
    item = (user * 3 + rng.integers(0, 2, n)) % 15   # each user prefers two items
    return Columns({"user": user, "item": item})


def train(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = TwoTower(l2=kwargs.pop("l2", 0.0))
    history = model.fit(synthetic(), epochs=kwargs.pop("epochs", 5), batch_size=64,
                        optimizer=lambda p: torch.optim.Adagrad(p, lr=0.5), seed=7, verbose=False, **kwargs)
    return model, history


def test_fit_learns_and_reports_tfrs_metric_names():
    model, history = train(epochs=15)
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(synthetic(seed=1), batch_size=100)
    assert result["factorized_top_k/top_5_categorical_accuracy"] > 0.9
    assert {"loss", "regularization_loss", "total_loss"} <= result.keys()
    assert "factorized_top_k/top_1_categorical_accuracy" in history.history


def test_same_seed_same_result_and_shuffle_changes_batches():
    _, h1 = train()
    _, h2 = train()
    assert h1.history["loss"] == h2.history["loss"]
    _, h3 = train(shuffle=False)
    assert h3.history["loss"] != h1.history["loss"]


def test_validation_every_n_epochs():
    torch.manual_seed(0)
    model = TwoTower()
    history = model.fit(synthetic(), epochs=4, batch_size=64, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.5),
                        validation_data=synthetic(seed=2), validation_freq=2, verbose=False)
    val = history.history["val_factorized_top_k/top_5_categorical_accuracy"]
    assert math.isnan(val[0]) and math.isnan(val[2]) and not math.isnan(val[1]) and not math.isnan(val[3])
    assert history.to_dict()["history"]["val_loss"][0] is None


def test_regularization_loss_is_l2_times_squared_norm():
    model, history = train(l2=0.01, epochs=1)
    expected = 0.01 * float((model.user.weight.detach() ** 2).sum())
    result = model.evaluate(synthetic())
    assert result["regularization_loss"] == pytest.approx(expected, rel=1e-5)
    assert result["total_loss"] == pytest.approx(result["loss"] + expected, rel=1e-5)


def test_early_stopping_stops():
    torch.manual_seed(0)
    model = TwoTower()
    stop = EarlyStopping(monitor="loss", mode="min", patience=1, min_delta=1e9)
    history = model.fit(synthetic(), epochs=10, batch_size=64, optimizer=lambda p: torch.optim.SGD(p, lr=0.01),
                        callbacks=[stop], verbose=False)
    assert len(history) == 2


def test_weights_round_trip(tmp_path):
    model, _ = train(epochs=1)
    model.save_weights(tmp_path / "w.pt")
    other = TwoTower()
    other.load_weights(tmp_path / "w.pt")
    assert torch.equal(other.user.weight, model.user.weight)


def test_silent_and_verbose_progress(capsys):
    train(epochs=1)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    torch.manual_seed(0)
    TwoTower().fit(synthetic(), epochs=1, batch_size=64, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.5),
                   validation_data=synthetic(), verbose=True)
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "Epoch 1/1" not in captured.err and "epoch 1/1" in captured.out


def test_missing_optimizer_and_empty_data():
    with pytest.raises(recstack.core.errors.ConfigError, match="optimizer"):
        TwoTower().fit(synthetic(), verbose=False)
    with pytest.raises(recstack.core.errors.DataError, match="no rows"):
        TwoTower().evaluate({"user": torch.zeros(0, dtype=torch.long), "item": torch.zeros(0, dtype=torch.long)})


def test_summary_line_names_validation_metrics_once():
    from recstack.training.progress import summary_line

    line = summary_line(2, 5, {"loss": 1.0, "val_loss": 2.0, "val_factorized_top_k/top_10_categorical_accuracy": 0.5,
                               "epoch_seconds": 1.0})
    assert "val_loss=2" in line and "val_top10=0.5" in line and "val_val" not in line


def test_two_tower_logq_column_matches_explicit_correction():
    """TwoTowerRetrieval(sampling_probability=col) passes the column to the task in training only."""
    from recstack.models.two_tower import TwoTowerRetrieval

    torch.manual_seed(0)
    users, items = Embedding(5, 4), Embedding(6, 4)
    batch = {"user": torch.tensor([0, 1, 2]), "item": torch.tensor([3, 4, 5]),
             "p": torch.tensor([0.5, 0.25, 0.25])}
    model = TwoTowerRetrieval(users, items, Retrieval(), "user", "item", sampling_probability="p")
    expected = Retrieval()(users(batch["user"]), items(batch["item"]), candidate_sampling_probability=batch["p"])
    assert model.compute_loss(batch, training=True).item() == pytest.approx(expected.item())
    plain = Retrieval()(users(batch["user"]), items(batch["item"]))
    assert model.compute_loss(batch, training=False).item() == pytest.approx(plain.item())
    with pytest.raises(recstack.core.errors.ConfigError, match="not a column"):
        model.compute_loss({"user": batch["user"], "item": batch["item"]}, training=True)


class ListSource:
    """A BatchSource that is not a Columns: pre-cut batches, reversed on odd epochs."""

    def __init__(self, columns: Columns, batch_size: int):
        self.batches = list(columns.batches(batch_size))
        self.num_rows = columns.num_rows
        self.epochs_seen: list[int] = []

    def num_batches(self, batch_size, drop_remainder=False):
        return len(self.batches)

    def epoch_batches(self, batch_size, *, shuffle, seed, epoch, drop_remainder=False):
        self.epochs_seen.append(epoch)
        return iter(self.batches[::-1] if epoch % 2 else self.batches)


def test_fit_and_evaluate_read_any_batch_source():
    data = synthetic()
    source = ListSource(data, 64)
    assert isinstance(source, recstack.core.columns.BatchSource)
    torch.manual_seed(0)
    model = TwoTower()
    history = model.fit(source, epochs=3, batch_size=64, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.5),
                        verbose=False)
    assert source.epochs_seen == [1, 2, 3]
    assert len(history.history["loss"]) == 3
    # Evaluation reads the source in order (epoch 0) and agrees with the same rows as Columns.
    assert model.evaluate(ListSource(data, 64), batch_size=64) == pytest.approx(model.evaluate(data, batch_size=64))


@pytest.mark.parametrize("remove_hits", [False, True])
def test_two_tower_deduplicated_candidates_train_identically(remove_hits):
    """deduplicate_candidates runs the item tower once per distinct item; training must not change."""
    from recstack.models.two_tower import TwoTowerRetrieval

    def model(dedup):
        torch.manual_seed(3)
        items = torch.arange(15)
        user, item = Embedding(20, 8), Embedding(15, 8)
        task = Retrieval(metrics=FactorizedTopK(recstack.TowerCandidates(item, items), items, ks=(1, 5)),
                         remove_accidental_hits=remove_hits)
        return TwoTowerRetrieval(user, item, task, "user", "item", candidate_id="item",
                                 deduplicate_candidates=dedup)

    runs = []
    for dedup in (False, True):
        m = model(dedup)
        h = m.fit(synthetic(), epochs=3, batch_size=64, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.5),
                  seed=7, verbose=False)
        runs.append((h.history["loss"], m.evaluate(synthetic(seed=1), batch_size=100), m.candidate_tower.weight))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5)
    assert runs[1][1] == pytest.approx(runs[0][1], rel=1e-5)
    torch.testing.assert_close(runs[1][2], runs[0][2], rtol=1e-4, atol=1e-6)


def test_bfloat16_autocast_trains_with_a_float32_softmax():
    """autocast_dtype=bfloat16 (CPU autocast here; GPU in practice): towers in bf16, loss in float32."""
    from recstack.layers import MLP

    class Deep(TwoTower):
        def __init__(self):
            super().__init__()
            self.head = MLP(8, [16, 8])
            self.query_dtypes: set[torch.dtype] = set()

        def compute_loss(self, batch, training=False):
            q = self.head(self.user(batch["user"]))
            self.query_dtypes.add(q.dtype)
            return self.task(q, self.item(batch["item"]), candidate_ids=batch["item"])

    losses = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = Deep()
        h = model.fit(synthetic(), epochs=3, batch_size=64, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.3),
                      seed=1, verbose=False, autocast_dtype=dtype)
        assert model.query_dtypes == {dtype or torch.float32}
        losses[dtype] = h.history["loss"]
        assert all(math.isfinite(x) for x in losses[dtype])
    assert losses[torch.bfloat16] == pytest.approx(losses[None], rel=0.05)
    assert losses[torch.bfloat16][-1] < losses[torch.bfloat16][0]
