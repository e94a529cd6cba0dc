"""TFRS's deep retrieval tutorial (seed 000), timed for a few epochs as a speed baseline.

Not part of recstack; run it in an environment with TensorFlow, tf-keras and
tensorflow-recommenders (see benchmarks/tfrs_basic_retrieval.py):

    RECSTACK_DATA_DIR=../shared/datasets/ml-100k /tmp/tfvenv/bin/python \
        benchmarks/tfrs_deep_retrieval.py --epochs 5

Measures seconds per training epoch (median over epochs 2..N, no validation, train-time
metrics off as in the tutorial) and two validation passes (the first includes tracing), for
each layer_sizes setting.
Writes benchmarks/results/tfrs_deep_retrieval.json.
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

from _common import environment, write_json  # noqa: E402
from tfrs_basic_retrieval import EpochTimer  # noqa: E402

CONFIGS = {"1 layer": [32], "2 layers": [64, 32], "3 layers": [128, 64, 32]}


def load(data_dir: str):
    ratings = pd.read_csv(Path(data_dir) / "u.data", sep="\t", header=None,
                          names=["user_id", "movie_id", "rating", "timestamp"], dtype={"user_id": str, "movie_id": str})
    items = pd.read_csv(Path(data_dir) / "u.item", sep="|", header=None, encoding="latin-1", dtype=str)
    titles = dict(zip(items[0], items[1]))
    ratings_ds = tf.data.Dataset.from_tensor_slices({
        "user_id": ratings["user_id"].to_numpy(), "timestamp": ratings["timestamp"].to_numpy(np.int64),
        "movie_title": ratings["movie_id"].map(titles).to_numpy()})
    return ratings_ds, tf.data.Dataset.from_tensor_slices(items[1].to_numpy()), ratings["timestamp"].to_numpy()


def build(layer_sizes, ratings, movies, timestamps):
    buckets = np.linspace(timestamps.min(), timestamps.max(), num=1000)
    unique_titles = np.unique(np.concatenate(list(movies.batch(1000))))
    unique_users = np.unique(np.concatenate(list(ratings.batch(1_000).map(lambda x: x["user_id"]))))

    def dense(sizes):
        layers = tf.keras.Sequential()
        for size in sizes[:-1]:
            layers.add(tf.keras.layers.Dense(size, activation="relu"))
        layers.add(tf.keras.layers.Dense(sizes[-1]))
        return layers

    class UserModel(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.user_embedding = tf.keras.Sequential([
                tf.keras.layers.StringLookup(vocabulary=unique_users, mask_token=None),
                tf.keras.layers.Embedding(len(unique_users) + 1, 32)])
            self.timestamp_embedding = tf.keras.Sequential([
                tf.keras.layers.Discretization(buckets.tolist()),
                tf.keras.layers.Embedding(len(buckets) + 1, 32)])
            self.normalized_timestamp = tf.keras.layers.Normalization(axis=None)
            self.normalized_timestamp.adapt(timestamps)

        def call(self, inputs):
            return tf.concat([self.user_embedding(inputs["user_id"]), self.timestamp_embedding(inputs["timestamp"]),
                              tf.reshape(self.normalized_timestamp(inputs["timestamp"]), (-1, 1))], axis=1)

    class MovieModel(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.title_embedding = tf.keras.Sequential([
                tf.keras.layers.StringLookup(vocabulary=unique_titles, mask_token=None),
                tf.keras.layers.Embedding(len(unique_titles) + 1, 32)])
            self.title_vectorizer = tf.keras.layers.TextVectorization(max_tokens=10_000)
            self.title_text_embedding = tf.keras.Sequential([
                self.title_vectorizer, tf.keras.layers.Embedding(10_000, 32, mask_zero=True),
                tf.keras.layers.GlobalAveragePooling1D()])
            self.title_vectorizer.adapt(movies)

        def call(self, titles):
            return tf.concat([self.title_embedding(titles), self.title_text_embedding(titles)], axis=1)

    class Tower(tf.keras.Model):
        def __init__(self, embedding_model):
            super().__init__()
            self.embedding_model, self.dense_layers = embedding_model, dense(layer_sizes)

        def call(self, inputs):
            return self.dense_layers(self.embedding_model(inputs))

    query_model, candidate_model = Tower(UserModel()), Tower(MovieModel())

    class MovielensModel(tfrs.models.Model):
        def __init__(self):
            super().__init__()
            self.query_model, self.candidate_model = query_model, candidate_model
            self.task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(
                candidates=movies.batch(128).map(self.candidate_model)))

        def compute_loss(self, features, training=False):
            q = self.query_model({"user_id": features["user_id"], "timestamp": features["timestamp"]})
            return self.task(q, self.candidate_model(features["movie_title"]), compute_metrics=not training)

    return MovielensModel()


class CpuEpochTimer(tf.keras.callbacks.Callback):
    """Process CPU seconds per epoch (robust to other jobs on a shared machine at 1 thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.process_time() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra/inter-op threads (0: TF's default); 1 gives CPU seconds comparable "
                             "with benchmarks/deep_retrieval.py --threads 1 on a shared machine")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    load_start = os.getloadavg()[0]
    ratings, movies, timestamps = load(os.environ["RECSTACK_DATA_DIR"])
    tf.random.set_seed(42)
    shuffled = ratings.shuffle(100_000, seed=42, reshuffle_each_iteration=False)
    train, test = shuffled.take(80_000), shuffled.skip(80_000).take(20_000)
    out = {}
    for name, sizes in CONFIGS.items():
        model = build(sizes, ratings, movies, timestamps)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
        timer, cpu = EpochTimer(), CpuEpochTimer()
        model.fit(train.shuffle(100_000).batch(2048), epochs=args.epochs, verbose=0, callbacks=[timer, cpu])
        validation, validation_cpu = [], []
        for _ in range(2):   # the first pass also traces the evaluation function; the second is steady state
            start, start_cpu = time.perf_counter(), time.process_time()
            model.evaluate(test.batch(4096).cache(), verbose=0)
            validation.append(time.perf_counter() - start)
            validation_cpu.append(time.process_time() - start_cpu)
        out[name] = {"epoch_seconds": timer.seconds, "seconds_per_epoch_median": statistics.median(timer.seconds[1:]),
                     "validation_seconds": validation[0], "steady_validation_seconds": validation[1],
                     "cpu_seconds_per_epoch_median": statistics.median(cpu.seconds[1:]),
                     "validation_cpu_seconds": validation_cpu[0], "steady_validation_cpu_seconds": validation_cpu[1]}
        print(name, [round(s, 2) for s in timer.seconds], [round(v, 2) for v in validation],
              "cpu/epoch", round(out[name]["cpu_seconds_per_epoch_median"], 2), flush=True)
    write_json("tfrs_deep_retrieval.json", {
        "benchmark": "TFRS deep retrieval tutorial (seed 000), seconds per epoch, reference implementation",
        "versions": {"tensorflow": tf.__version__, "tensorflow_recommenders": tfrs.__version__},
        "environment": environment(), "epochs_timed": args.epochs, "threads": args.threads or "default",
        "loadavg_start_end": [load_start, os.getloadavg()[0]], "configs": out})


if __name__ == "__main__":
    main()
