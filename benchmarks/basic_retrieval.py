"""Reproduce TFRS's basic retrieval tutorial (seed 002) and time it.

Writes benchmarks/results/basic_retrieval.json: test metrics for several model
seeds (mean and sd), seconds per epoch (median of epochs 2-3) with train-time
metrics on and off, evaluation seconds, and the top-3 titles for user "42".

    RECSTACK_DATA_DIR=../shared/datasets/ml-100k python benchmarks/basic_retrieval.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, summary, write_json  # noqa: E402

from recstack.datasets import load_movielens_100k  # noqa: E402
from recstack.reproduce import basic_retrieval  # noqa: E402

SEED_PAPER = {  # the tutorial's printed test metrics
    "factorized_top_k/top_1_categorical_accuracy": 0.00075,
    "factorized_top_k/top_5_categorical_accuracy": 0.0099,
    "factorized_top_k/top_10_categorical_accuracy": 0.0226,
    "factorized_top_k/top_50_categorical_accuracy": 0.1245,
    "factorized_top_k/top_100_categorical_accuracy": 0.2324,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--timing-seeds", type=int, default=3, help="extra runs with train metrics off")
    args = parser.parse_args()
    data = load_movielens_100k()

    runs = []
    for seed in range(args.seeds):
        result = basic_retrieval(data, seed=seed, train_metrics=True)
        runs.append({
            "seed": seed,
            "test": result.test_metrics,
            "epoch_seconds": result.epoch_seconds(),
            "train_loss": result.history.history["loss"],
            "evaluate_seconds": result.evaluate_seconds,
            "recommendations_user_42": result.recommendations["42"],
        })
        top100 = result.test_metrics["factorized_top_k/top_100_categorical_accuracy"]
        print(f"seed {seed}: top100={top100:.4f} epochs={['%.2f' % s for s in result.epoch_seconds()]}"
              f" eval={result.evaluate_seconds:.3f}s user42={result.recommendations['42']}", flush=True)

    no_metric_epochs = []
    for seed in range(args.timing_seeds):
        result = basic_retrieval(data, seed=seed, train_metrics=False)
        no_metric_epochs.append(statistics.median(result.epoch_seconds()[1:3]))

    keys = list(SEED_PAPER)
    payload = {
        "benchmark": "TFRS basic retrieval tutorial (seed 002) in recstack",
        "settings": {"embedding_dim": 32, "optimizer": "Adagrad(lr=0.1, initial_accumulator=0.1, eps=1e-7)",
                     "batch_size": 8192, "epochs": 3, "split": "random 80/20, seed 42",
                     "candidates": "all 1682 rows of the movies table", "train_time_metrics": True},
        "environment": environment(),
        "seed_tutorial": SEED_PAPER,
        "test_metrics": {k: summary([r["test"][k] for r in runs]) for k in runs[0]["test"]},
        "seconds_per_epoch_median_epochs_2_3": {
            "train_metrics_on": summary([statistics.median(r["epoch_seconds"][1:3]) for r in runs]),
            "train_metrics_off": summary(no_metric_epochs),
        },
        "evaluate_seconds_20k_test": summary([r["evaluate_seconds"] for r in runs]),
        "runs": runs,
    }
    path = write_json("basic_retrieval.json", payload)
    print(f"top-100 mean {payload['test_metrics'][keys[-1]]['mean']:.4f} "
          f"(sd {payload['test_metrics'][keys[-1]]['sd']:.4f}); wrote {path}")


if __name__ == "__main__":
    main()
