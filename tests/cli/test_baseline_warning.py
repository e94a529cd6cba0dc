"""Every trained run evaluates popularity on its own split and warns when the model does not beat it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from recstack.cli.main import main
from recstack.experiment.baseline_check import losses_to_baseline, warning_text
from synthetic_movielens import write_synthetic_ml100k

NUM_USERS, NUM_MOVIES = 80, 60


def write_power_law(directory: Path, seed: int = 0) -> Path:
    """MovieLens 100K files whose ratings follow a power law in item popularity within 4 user
    groups, each group preferring its own quarter of the catalogue: popularity is a strong
    baseline, and a model of the user-item structure (EASE) beats it."""
    write_synthetic_ml100k(directory, num_users=NUM_USERS, num_movies=NUM_MOVIES, num_ratings=100, seed=seed)
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, NUM_USERS + 1):
        group = user % 4
        # Zipf weights over the catalogue, 20x heavier on the user's group's quarter.
        weights = 1.0 / np.arange(1, NUM_MOVIES + 1) ** 1.0
        weights[np.arange(NUM_MOVIES) % 4 == group] *= 20.0
        movies = rng.choice(NUM_MOVIES, size=20, replace=False, p=weights / weights.sum()) + 1
        stamps = 880_000_000 + rng.integers(0, 10_000_000, size=movies.size)
        lines += [f"{user}\t{m}\t{int(rng.integers(1, 6))}\t{t}\n" for m, t in zip(movies, stamps)]
    (directory / "u.data").write_text("".join(lines))
    return directory


def run(config: str, folder: Path, data: Path, capsys: pytest.CaptureFixture[str],
        *overrides: str) -> tuple[dict, str]:
    previous = os.environ.get("RECSTACK_DATA_DIR")
    os.environ["RECSTACK_DATA_DIR"] = str(data)
    try:
        args = ["train", config, "--run-dir", str(folder), "--progress", "quiet"]
        for item in overrides:
            args += ["--set", item]
        capsys.readouterr()
        assert main(args) == 0
        captured = capsys.readouterr()
    finally:
        if previous is None:
            os.environ.pop("RECSTACK_DATA_DIR", None)
        else:
            os.environ["RECSTACK_DATA_DIR"] = previous
    return json.loads((folder / "metrics.json").read_text()), captured.out + captured.err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_power_law(tmp_path_factory.mktemp("power-law") / "ml-100k")


def test_an_untrained_two_tower_model_is_warned_about(data, tmp_path, capsys):
    # A learning rate of 10^-9 leaves the towers at their random initialisation.
    metrics, output = run("basic-retrieval", tmp_path / "tt", data, capsys, "training.epochs=1",
                          "optimizer.learning_rate=0.000000001", "training.train_metrics=false")
    assert "WARNING: the two_tower model does not beat the popularity baseline" in output
    assert "exclude-seen recall_at_10" in output and "tasks.retrieval.temperature" in output
    baseline = metrics["baselines"]["popularity"]
    assert set(baseline) == {"all-items", "exclude-seen"}
    ours = metrics["protocols"]["exclude-seen"]["factorized_top_k/recall_at_10"]
    assert baseline["exclude-seen"]["factorized_top_k/recall_at_10"] > ours


def test_a_model_that_wins_is_not_warned_about_and_the_baseline_is_the_popularity_run(data, tmp_path, capsys):
    metrics, output = run("ease", tmp_path / "ease", data, capsys)
    assert "WARNING" not in output
    recorded = metrics["baselines"]["popularity"]
    # The recorded baseline is what the popularity kind itself scores on the same split and protocols.
    popularity, pop_output = run("popularity", tmp_path / "pop", data, capsys)
    assert "baselines" not in popularity and "WARNING" not in pop_output
    for protocol, values in popularity["protocols"].items():
        for key, value in values.items():
            assert recorded[protocol][key] == pytest.approx(value, abs=1e-12), (protocol, key)
    for key in ("recall_at_10", "ndcg_at_10", "mrr"):
        assert metrics["protocols"]["exclude-seen"][f"factorized_top_k/{key}"] > \
            recorded["exclude-seen"][f"factorized_top_k/{key}"]


def test_losses_are_the_headline_metrics_not_above_the_baseline():
    base = {"exclude-seen": {"factorized_top_k/recall_at_10": 0.2, "factorized_top_k/ndcg_at_10": 0.3,
                             "factorized_top_k/mrr": 0.5, "factorized_top_k/recall_at_5": 0.9}}
    model = {"exclude-seen": {"factorized_top_k/recall_at_10": 0.25, "factorized_top_k/ndcg_at_10": 0.3,
                              "factorized_top_k/mrr": float("nan"), "factorized_top_k/recall_at_5": 0.1}}
    losses = losses_to_baseline(model, base, [5, 10])
    # recall@10 wins; a tie and NaN lose; recall@5 is not a headline metric when 10 is evaluated.
    assert [(p, m) for p, m, _, _ in losses] == [("exclude-seen", "ndcg_at_10"), ("exclude-seen", "mrr")]
    assert losses_to_baseline(model, base, [5])[0][1] == "recall_at_5"
    text = warning_text("ease", [("exclude-seen", "recall_at_10", 0.1, 0.2)], gradient_trained=False)
    assert "recall_at_10 0.1000 vs 0.2000 (-0.1000, -50%)" in text and "model.l2" in text
