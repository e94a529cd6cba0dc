"""The same tutorial in TensorFlow Recommenders, for a side-by-side speed baseline.

Not part of recstack: run it in a separate environment that has TensorFlow,
tf-keras and tensorflow-recommenders 0.7.x, e.g.

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf-keras \
        tensorflow-recommenders pandas
    RECSTACK_DATA_DIR=../shared/datasets/ml-100k TF_USE_LEGACY_KERAS=1 \
        /tmp/tfvenv/bin/python benchmarks/tfrs_basic_retrieval.py --seeds 2

The ratings are read with pandas straight from the MovieLens files (no TFDS
download), in u.data order with the TFDS field names the tutorial uses.
Writes benchmarks/results/tfrs_basic_retrieval.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from _common import environment, summary, write_json  # noqa: E402


def load(data_dir: str) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    ratings = pd.read_csv(Path(data_dir) / "u.data", sep="\t", header=None,
                          names=["user_id", "movie_id", "rating", "timestamp"], dtype=str)
    items = pd.read_csv(Path(data_dir) / "u.item", sep="|", header=None, encoding="latin-1", dtype=str)
    titles = dict(zip(items[0], items[1]))
    ratings_ds = tf.data.Dataset.from_tensor_slices({
        "user_id": ratings["user_id"].to_numpy(),
        "movie_title": ratings["movie_id"].map(titles).to_numpy(),
    })
    movies_ds = tf.data.Dataset.from_tensor_slices(items[1].to_numpy())
    return ratings_ds, movies_ds


class EpochTimer(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def run(ratings, movies, seed: int, compute_metrics: bool) -> dict:
    tf.random.set_seed(seed)
    shuffled = ratings.shuffle(100_000, seed=42, reshuffle_each_iteration=False)
    train = shuffled.take(80_000)
    test = shuffled.skip(80_000).take(20_000)
    unique_titles = np.unique(np.concatenate(list(movies.batch(1_000))))
    unique_users = np.unique(np.concatenate(list(ratings.batch(1_000_000).map(lambda x: x["user_id"]))))
    user_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=unique_users, mask_token=None),
        tf.keras.layers.Embedding(len(unique_users) + 1, 32)])
    movie_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=unique_titles, mask_token=None),
        tf.keras.layers.Embedding(len(unique_titles) + 1, 32)])
    task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(candidates=movies.batch(128).map(movie_model)))

    class MovielensModel(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.user_model, self.movie_model, self.task = user_model, movie_model, task

        def compute_loss(self, features, training=False):
            return self.task(self.user_model(features["user_id"]), self.movie_model(features["movie_title"]),
                             compute_metrics=compute_metrics or not training)

    model = MovielensModel()
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    timer = EpochTimer()
    model.fit(train.shuffle(100_000).batch(8192).cache(), epochs=3, verbose=0, callbacks=[timer])
    cached_test = test.batch(4096).cache()
    start = time.perf_counter()
    metrics = model.evaluate(cached_test, return_dict=True, verbose=0)
    return {"seed": seed, "epoch_seconds": timer.seconds, "evaluate_seconds": time.perf_counter() - start,
            "test": {k: float(v) for k, v in metrics.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--timing-seeds", type=int, default=1)
    args = parser.parse_args()
    ratings, movies = load(os.environ["RECSTACK_DATA_DIR"])
    runs = [run(ratings, movies, seed, True) for seed in range(args.seeds)]
    off = [run(ratings, movies, seed, False) for seed in range(args.timing_seeds)]
    for r in runs + off:
        print(r["seed"], [round(s, 2) for s in r["epoch_seconds"]], round(r["evaluate_seconds"], 2),
              round(r["test"]["factorized_top_k/top_100_categorical_accuracy"], 4), flush=True)
    payload = {
        "benchmark": "TFRS basic retrieval tutorial (seed 002), reference implementation",
        "versions": {"tensorflow": tf.__version__, "tensorflow_recommenders": tfrs.__version__},
        "environment": environment(),
        "seconds_per_epoch_median_epochs_2_3": {
            "train_metrics_on": summary([statistics.median(r["epoch_seconds"][1:3]) for r in runs]),
            "train_metrics_off": summary([statistics.median(r["epoch_seconds"][1:3]) for r in off]),
        },
        "evaluate_seconds_20k_test": summary([r["evaluate_seconds"] for r in runs]),
        "test_top_100": summary([r["test"]["factorized_top_k/top_100_categorical_accuracy"] for r in runs]),
        "runs": runs + off,
    }
    write_json("tfrs_basic_retrieval.json", payload)


if __name__ == "__main__":
    main()
