"""Popularity, EASE and the tuned recstack retrieval model under two protocols.

Same split as the tutorials (``random_split(ratings, 0.8, seed=42)``), same FactorizedTopK
code for every model, candidates = the 1682 catalogue rows (title ids as candidate ids):

* "tutorial": no exclusion (the TFRS tutorials' protocol).
* "exclude_seen": each user's training items are masked (``recstack.Exclusions``,
  query_keys = encoded user ids).

Both report top-1/5/10/50/100 accuracy (per test row) and recall/NDCG@10, MRR (per user,
rows grouped by query key). Hyperparameters are chosen on a validation slice of the
training data (``random_split(train, 0.9, seed=7)``), never on the test split:
EASE's λ by exclude-seen top-10 + top-100; with ``--tune`` the retrieval search grid is
rerun and the selection rule (largest min of: exclude-seen top-10 / EASE, exclude-seen
top-100 / EASE, tutorial top-100 / popularity) is applied to it.

Usage: RECSTACK_DATA_DIR=... nice -n 19 python benchmarks/baselines.py [--tune] [--seeds 0 1 2]
Writes benchmarks/results/baselines.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import recstack
from recstack.core.io import atomic_write_json
from recstack.datasets import load_movielens_100k, random_split
from recstack.models.baselines import EASE, Popularity, evaluate_retrieval
from recstack.models.movielens_features import fit_movielens_features
from recstack.models.presets import best_retrieval_config, build_and_train, tutorial_retrieval_config

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "factorized_top_k/"
KEYS = ["top_1_categorical_accuracy", "top_5_categorical_accuracy", "top_10_categorical_accuracy",
        "top_50_categorical_accuracy", "top_100_categorical_accuracy", "recall_at_10", "ndcg_at_10", "mrr"]
EASE_GRID = [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0]

# The validation search behind best_retrieval_config(): deltas from this base.
_BASE = {"layer_sizes": [], "embedding_dim": 64, "use_timestamp": False, "use_text": False,
         "temperature": 0.1, "reduction": "mean", "remove_accidental_hits": True, "logq_correction": False,
         "optimizer": "adam", "learning_rate": 3e-3, "batch_size": 1024, "epochs": 30, "l2": 0.0}
TUNING_GRID: list[dict[str, Any]] = [
    {},
    {"logq_correction": True},
    {"logq_correction": True, "epochs": 20, "l2": 1e-4},
    {"logq_correction": True, "epochs": 20, "l2": 1e-3},
    {"logq_correction": True, "epochs": 20, "l2": 3e-3},
    {"logq_correction": True, "epochs": 40, "l2": 1e-3},
    {"logq_correction": True, "epochs": 20, "l2": 1e-3, "temperature": 0.2},
    {"logq_correction": True, "epochs": 20, "l2": 1e-3, "temperature": 0.05},
    {"logq_correction": True, "epochs": 20, "l2": 1e-3, "temperature": 0.07},
    {"logq_correction": True, "epochs": 20, "l2": 1e-3, "temperature": 0.07, "embedding_dim": 128},
    {"logq_correction": True, "epochs": 20, "l2": 1e-3, "temperature": 0.07, "use_text": True,
     "layer_sizes": [64]},
]


def short(result: dict[str, float]) -> dict[str, float]:
    return {k: result[PREFIX + k] for k in KEYS}


def both_protocols(model: Any, data: recstack.Columns, candidates: Any, candidate_ids: torch.Tensor,
                   exclude: recstack.Exclusions) -> dict[str, dict[str, float]]:
    return {
        "tutorial": short(evaluate_retrieval(model, data, candidates, candidate_ids, query_key="user_id")),
        "exclude_seen": short(evaluate_retrieval(model, data, candidates, candidate_ids, query_key="user_id",
                                                 exclude=exclude)),
    }


def baselines_on(train: recstack.Columns, test: recstack.Columns, movies: recstack.Columns, features: Any,
                 exclude: recstack.Exclusions, l2: float) -> dict[str, Any]:
    out = {}
    for name, model in (("popularity", Popularity(features.num_titles, candidate_ids=movies["title_id"])),
                        ("ease", EASE(features.num_titles, features.num_users, l2=l2,
                                      candidate_ids=movies["title_id"]))):
        start = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - start
        out[name] = both_protocols(model, test, model.catalogue_embeddings(), movies["title_id"], exclude)
        out[name]["fit_seconds"] = fit_s
    out["ease"]["l2"] = l2
    return out


def train_retrieval(config: dict[str, Any], train: recstack.Columns, test: recstack.Columns,
                    movies: recstack.Columns, features: Any, exclude: recstack.Exclusions,
                    seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    model, history = build_and_train(config, features, train, movies, seed=seed)
    seconds = time.perf_counter() - start
    candidates = model.task.metrics[0].candidates  # TowerCandidates over the catalogue
    out = both_protocols(model, test, candidates, movies["title_id"], exclude)
    out["train_seconds"] = seconds
    out["seed"] = seed
    return out


def selection_score(result: dict[str, Any], pop: dict[str, Any], ease: dict[str, Any]) -> float:
    """min(excl top-10 / EASE, excl top-100 / EASE, tutorial top-100 / popularity)."""
    t10, t100 = "top_10_categorical_accuracy", "top_100_categorical_accuracy"
    return min(result["exclude_seen"][t10] / ease["exclude_seen"][t10],
               result["exclude_seen"][t100] / ease["exclude_seen"][t100],
               result["tutorial"][t100] / pop["tutorial"][t100])


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for protocol in ("tutorial", "exclude_seen"):
        out[protocol] = {k: statistics.mean(r[protocol][k] for r in runs) for k in KEYS}
        out[protocol + "_std"] = {k: statistics.stdev(r[protocol][k] for r in runs) if len(runs) > 1 else None
                                  for k in KEYS}
    out["seeds"] = [r["seed"] for r in runs]
    out["train_seconds_median"] = statistics.median(r["train_seconds"] for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", action="store_true", help="rerun the retrieval search on validation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "baselines.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = load_movielens_100k()
    features = fit_movielens_features(ds.ratings, ds.movies)
    train_df, test_df = random_split(ds.ratings, 0.8, seed=42)
    fit_df, val_df = random_split(train_df, 0.9, seed=7)
    movies = features.encode_movies(ds.movies)
    train, test = features.encode_ratings(train_df), features.encode_ratings(test_df)
    fit, val = features.encode_ratings(fit_df), features.encode_ratings(val_df)
    n_users = features.num_users
    exclude_test = recstack.Exclusions.from_pairs(train["user_id"], train["title_id"], num_keys=n_users)
    exclude_val = recstack.Exclusions.from_pairs(fit["user_id"], fit["title_id"], num_keys=n_users)
    result: dict[str, Any] = {"split": {"train": train.num_rows, "test": test.num_rows,
                                        "fit": fit.num_rows, "validation": val.num_rows}}

    # EASE's lambda on validation (exclude-seen top-10 + top-100).
    grid = {}
    for l2 in EASE_GRID:
        model = EASE(features.num_titles, n_users, l2=l2, candidate_ids=movies["title_id"])
        model.fit(fit)
        grid[l2] = both_protocols(model, val, model.catalogue_embeddings(), movies["title_id"], exclude_val)
        print(f"EASE l2={l2}: validation {grid[l2]['exclude_seen']['top_10_categorical_accuracy']:.4f} / "
              f"{grid[l2]['exclude_seen']['top_100_categorical_accuracy']:.4f}", flush=True)
    best_l2 = max(EASE_GRID, key=lambda l: grid[l]["exclude_seen"]["top_10_categorical_accuracy"]
                  + grid[l]["exclude_seen"]["top_100_categorical_accuracy"])
    validation = baselines_on(fit, val, movies, features, exclude_val, best_l2)
    result["validation"] = {"ease_grid": {str(k): v for k, v in grid.items()}, "ease_l2": best_l2,
                            "popularity": validation["popularity"], "ease": validation["ease"]}

    if args.tune:
        tuning = []
        for delta in TUNING_GRID:
            config = {**_BASE, **delta}
            run = train_retrieval(config, fit, val, movies, features, exclude_val, seed=0)
            run["config"] = config
            run["selection_score"] = selection_score(run, validation["popularity"], validation["ease"])
            print(f"tune {delta}: score {run['selection_score']:.4f}", flush=True)
            tuning.append(run)
        chosen = max(tuning, key=lambda r: r["selection_score"])
        result["validation"]["tuning"] = tuning
        result["validation"]["selected_config"] = chosen["config"]
        full = lambda c: {**tutorial_retrieval_config(), **c}  # noqa: E731 - defaults fill absent keys
        result["validation"]["selected_equals_best_retrieval_config"] = (
            full(chosen["config"]) == full(best_retrieval_config()))

    # Test: everything refitted on the full training split.
    test_results = baselines_on(train, test, movies, features, exclude_test, best_l2)
    runs = []
    for seed in args.seeds:
        runs.append(train_retrieval(best_retrieval_config(), train, test, movies, features, exclude_test, seed))
        print(f"best config seed {seed}: {runs[-1]['exclude_seen']['top_10_categorical_accuracy']:.4f} / "
              f"{runs[-1]['exclude_seen']['top_100_categorical_accuracy']:.4f} (exclude seen), "
              f"{runs[-1]['tutorial']['top_100_categorical_accuracy']:.4f} (tutorial top-100)", flush=True)
    best = mean_of(runs)
    best["runs"] = runs
    best["config"] = best_retrieval_config()
    t10, t100 = "top_10_categorical_accuracy", "top_100_categorical_accuracy"
    ease, pop = test_results["ease"], test_results["popularity"]
    best["vs_baselines"] = {
        "tutorial_top_100_minus_popularity": best["tutorial"][t100] - pop["tutorial"][t100],
        "exclude_seen_top_10_fraction_of_ease": best["exclude_seen"][t10] / ease["exclude_seen"][t10],
        "exclude_seen_top_100_fraction_of_ease": best["exclude_seen"][t100] / ease["exclude_seen"][t100],
    }
    result["test"] = {**test_results, "recstack_best": best}
    result["environment"] = {"torch": torch.__version__, "recstack": recstack.__version__,
                             "python": platform.python_version(), "torch_threads": args.threads}
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result["test"].items()}, indent=1)[:4000])


if __name__ == "__main__":
    main()
