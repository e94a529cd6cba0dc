"""Item features at each history position: the lookup by hand, and the kinds that read them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.cli.main import main
from recstack.layers.item_side_features import ItemSideFeatures

from sequential_walks import NUM_ITEMS, SASREC, sequential_config


def test_each_position_gets_its_items_categorical_and_mean_text_embeddings() -> None:
    torch.manual_seed(0)
    side = ItemSideFeatures(4, 3, categorical_sizes=[3, 2], text_vocab_size=5, text_length=3)
    categorical = torch.tensor([[0, 0], [1, 1], [2, 0], [1, 1]])
    text = torch.tensor([[0, 0, 0], [1, 2, 0], [3, 0, 0], [4, 4, 1]])
    side.set_tables(categorical=categorical, text=text)
    items = torch.tensor([[0, 1, 3], [2, 2, 0]])
    got = side(items).detach().numpy()
    E0, E1 = (e.weight.detach().numpy() for e in side.categorical)
    T = side.text.embedding.weight.detach().numpy()
    for b in range(2):
        for t in range(3):
            i = int(items[b, t])
            if i == 0:
                np.testing.assert_array_equal(got[b, t], 0.0)       # padding reads nothing
                continue
            tokens = [int(x) for x in text[i] if int(x) != 0]
            ref = E0[categorical[i, 0]] + E1[categorical[i, 1]] + T[tokens].mean(axis=0)
            np.testing.assert_allclose(got[b, t], ref, rtol=1e-6, atol=1e-7)


def test_tables_of_the_wrong_shape_are_refused() -> None:
    side = ItemSideFeatures(4, 3, categorical_sizes=[3])
    with pytest.raises(Exception, match=r"categorical_table must have shape \(4, 1\)"):
        side.set_tables(categorical=torch.zeros(5, 1, dtype=torch.long))


def item_table(folder) -> None:
    """Each walk item's ring half (a categorical feature) and a one-word title (text)."""
    pd.DataFrame({"item": [f"i{j}" for j in range(NUM_ITEMS)],
                  "half": ["low" if j < NUM_ITEMS // 2 else "high" for j in range(NUM_ITEMS)],
                  "title": [f"movie number{j % 3}" for j in range(NUM_ITEMS)]}).to_csv(folder / "items.csv",
                                                                                       index=False)


def test_sasrec_with_item_features_trains_reloads_and_reproduces_its_metrics(tmp_path, capsys) -> None:
    item_table(tmp_path)
    model = {**SASREC, "use_item_features": True}
    config = sequential_config(tmp_path, model, training={"epochs": 3},
                               data={"items": {"path": "items.csv", "id": "item", "categorical": ["half"],
                                               "text": "title"}})
    run = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run), "--progress", "quiet"]) == 0
    trained = json.loads((run / "metrics.json").read_text())["protocols"]["next-item"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "next-item", "--format", "json"]) == 0
    again = json.loads(capsys.readouterr().out)["protocols"]["next-item"]
    assert again == pytest.approx(trained)
    weights = torch.load(run / "model.pt", weights_only=True)
    table = weights["encoder.input.feature_encoders.item_side.categorical_table"]
    assert table.shape == (NUM_ITEMS + 1, 1) and len(set(table[1:, 0].tolist())) == 2   # both halves encoded


def test_item_features_without_an_item_table_is_a_config_error(tmp_path, capsys) -> None:
    config = sequential_config(tmp_path, {**SASREC, "use_item_features": True})
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--progress", "quiet"]) == 2
    assert "model.use_item_features: the run has no categorical or text item features" in capsys.readouterr().err
