"""Popularity, EASE and the tuned recstack retrieval model (the movielens-best config), two protocols.

Every model is a shipped config run as `recstack train NAME` runs it (benchmarks/_configs.py):
``popularity``, ``ease`` and ``movielens-best``, all on basic-retrieval's data and split, evaluated
under the configs' protocols, "all-items" (the TFRS tutorials' protocol) and "exclude-seen" (each
user's training items masked). Both report top-1/5/10/50/100 accuracy (per test row) and
recall/NDCG@10, MRR (per user).

Hyperparameters are chosen on a validation slice of the training data, never on the test split:
``--set split.validation_fraction=0.1`` (10 % of the training rows, the configs' own validation
split). EASE's λ by exclude-seen top-10 + top-100; with ``--tune`` the retrieval search grid
(overrides of movielens-best) is rerun and the selection rule (largest min of: exclude-seen top-10 /
EASE, exclude-seen top-100 / EASE, all-items top-100 / popularity) is applied to it. The figures
the tuning targeted are movielens-best's reference block.

Usage: RECSTACK_DATA_DIR=... nice -n 19 python benchmarks/baselines.py [--tune] [--seeds 0 1 2]
Writes benchmarks/results/baselines.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recstack  # noqa: E402
from recstack.core.io import atomic_write_json  # noqa: E402
from recstack.experiment.config_files import load_config  # noqa: E402
from recstack.experiment.reference import changed_settings  # noqa: E402

from _configs import evaluate, fit, overrides  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BEST = "movielens-best"
VALIDATION = ["split.validation_fraction=0.1"]
EASE_GRID = [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0]
T10, T100 = "top_10_categorical_accuracy", "top_100_categorical_accuracy"

# The validation search behind movielens-best: the base of the search, as overrides of the config, and
# the deltas from that base, in the order they were run.
SEARCH_BASE = {"tasks.retrieval.temperature": 0.1, "tasks.retrieval.logq_correction": False, "model.l2": 0.0,
               "training.epochs": 30}
_LOGQ_20 = {"tasks.retrieval.logq_correction": True, "training.epochs": 20}
TUNING_GRID: list[dict[str, Any]] = [
    {},
    {"tasks.retrieval.logq_correction": True},
    {**_LOGQ_20, "model.l2": 1e-4},
    {**_LOGQ_20, "model.l2": 1e-3},
    {**_LOGQ_20, "model.l2": 3e-3},
    {**_LOGQ_20, "training.epochs": 40, "model.l2": 1e-3},
    {**_LOGQ_20, "model.l2": 1e-3, "tasks.retrieval.temperature": 0.2},
    {**_LOGQ_20, "model.l2": 1e-3, "tasks.retrieval.temperature": 0.05},
    {**_LOGQ_20, "model.l2": 1e-3, "tasks.retrieval.temperature": 0.07},
    {**_LOGQ_20, "model.l2": 1e-3, "tasks.retrieval.temperature": 0.07, "model.embedding_dim": 128},
    {**_LOGQ_20, "model.l2": 1e-3, "tasks.retrieval.temperature": 0.07, "model.use_item_features": True,
     "model.layer_sizes": [64]},
]


def timed(name: str, sets: list[str], split: str, prepared: Any = None) -> tuple[dict[str, Any], Any]:
    """Fit the config ``name`` with ``sets`` and evaluate it on ``split``; (result, its prepared data)."""
    start = time.perf_counter()
    fitted = fit(load_config(name, sets), prepared=prepared)
    seconds = time.perf_counter() - start
    return {**evaluate(fitted, split), "fit_seconds": seconds}, fitted.prepared


def baselines_on(split: str, sets: list[str], l2: float) -> dict[str, Any]:
    popularity, prepared = timed("popularity", sets, split)
    ease, _ = timed("ease", [*sets, f"model.l2={l2}"], split, prepared)   # same data, split and features
    return {"popularity": popularity, "ease": {**ease, "l2": l2}}


def selection_score(result: dict[str, Any], pop: dict[str, Any], ease: dict[str, Any]) -> float:
    """min(excl top-10 / EASE, excl top-100 / EASE, all-items top-100 / popularity)."""
    return min(result["exclude-seen"][T10] / ease["exclude-seen"][T10],
               result["exclude-seen"][T100] / ease["exclude-seen"][T100],
               result["all-items"][T100] / pop["all-items"][T100])


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for protocol in ("all-items", "exclude-seen"):
        keys = runs[0][protocol]
        out[protocol] = {k: statistics.mean(r[protocol][k] for r in runs) for k in keys}
        out[protocol + "_std"] = {k: statistics.stdev(r[protocol][k] for r in runs) if len(runs) > 1 else None
                                  for k in keys}
    out["seeds"] = [r["seed"] for r in runs]
    out["fit_seconds_median"] = statistics.median(r["fit_seconds"] for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", action="store_true", help="rerun the retrieval search on validation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every movielens-best run (e.g. training.epochs=1 for a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "baselines.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"configs": ["popularity", "ease", BEST], "validation": {"split": VALIDATION}}

    # EASE's lambda on validation (exclude-seen top-10 + top-100).
    grid, prepared = {}, None
    for l2 in EASE_GRID:
        grid[l2], prepared = timed("ease", [*VALIDATION, f"model.l2={l2}"], "validation", prepared)
        print(f"EASE l2={l2}: validation {grid[l2]['exclude-seen'][T10]:.4f} / {grid[l2]['exclude-seen'][T100]:.4f}",
              flush=True)
    best_l2 = max(EASE_GRID, key=lambda l: grid[l]["exclude-seen"][T10] + grid[l]["exclude-seen"][T100])
    validation = baselines_on("validation", VALIDATION, best_l2)
    result["validation"].update({"ease_grid": {str(k): v for k, v in grid.items()}, "ease_l2": best_l2, **validation})

    if args.tune:
        tuning, best_prepared = [], None
        for delta in TUNING_GRID:
            sets = overrides({**SEARCH_BASE, **delta})
            run, best_prepared = timed(BEST, [*VALIDATION, *sets, *args.overrides], "validation",
                                       best_prepared if "model.use_item_features" not in delta else None)
            run["overrides"] = sets
            run["selection_score"] = selection_score(run, validation["popularity"], validation["ease"])
            print(f"tune {delta}: score {run['selection_score']:.4f}", flush=True)
            tuning.append(run)
        chosen = max(tuning, key=lambda r: r["selection_score"])
        result["validation"]["tuning"] = tuning
        result["validation"]["selected_overrides"] = chosen["overrides"]
        result["validation"]["selected_equals_the_config"] = not changed_settings(
            load_config(BEST), load_config(BEST, chosen["overrides"]))

    # Test: everything refitted on the full training split.
    test_results = baselines_on("test", [], best_l2)
    runs = []
    for seed in args.seeds:
        run, _ = timed(BEST, [f"seed={seed}", *args.overrides], "test")
        runs.append({**run, "seed": seed})
        print(f"{BEST} seed {seed}: {run['exclude-seen'][T10]:.4f} / {run['exclude-seen'][T100]:.4f} (exclude seen), "
              f"{run['all-items'][T100]:.4f} (all-items top-100)", flush=True)
    best = mean_of(runs)
    best["runs"] = runs
    best["config"] = load_config(BEST, args.overrides).to_dict()
    ease, pop = test_results["ease"], test_results["popularity"]
    best["vs_baselines"] = {
        "all_items_top_100_minus_popularity": best["all-items"][T100] - pop["all-items"][T100],
        "exclude_seen_top_10_fraction_of_ease": best["exclude-seen"][T10] / ease["exclude-seen"][T10],
        "exclude_seen_top_100_fraction_of_ease": best["exclude-seen"][T100] / ease["exclude-seen"][T100],
    }
    result["test"] = {**test_results, BEST: best}
    result["environment"] = {"torch": torch.__version__, "recstack": recstack.__version__,
                             "python": platform.python_version(), "torch_threads": args.threads}
    atomic_write_json(args.out, result)
    print(json.dumps(result["test"], indent=1)[:4000])


if __name__ == "__main__":
    main()
