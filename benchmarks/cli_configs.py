"""The shipped seed-experiment configs through `recstack train`, over several seeds.

Each (config, seed) runs `recstack train configs/NAME.yaml --set seed=S [--set split.seed=S]`
into a temporary run folder and keeps its test metrics; the JSON gathers mean and standard
deviation next to the seed document's published number.

Usage (real data needed):
    RECSTACK_DATA_DIR=... python benchmarks/cli_configs.py autorec --seeds 0 1 2 3 4 --vary-split
    RECSTACK_DATA_DIR=... python benchmarks/cli_configs.py deep_retrieval --seeds 0
Results are merged into benchmarks/results/cli_configs.json (one entry per config).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from recstack.core.io import atomic_write_json
from recstack.experiment.config import load_config
from recstack.experiment.run import train
from recstack.experiment.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cli_configs.json"
#: What each config is compared with: (metric path in metrics.json, published value, source).
PUBLISHED = {
    "basic_retrieval": (("protocols", "seed", "factorized_top_k/top_100_categorical_accuracy"), 0.2324,
                        "seed 002 (TFRS basic retrieval) test top-100"),
    "deep_retrieval": (("protocols", "seed", "factorized_top_k/top_100_categorical_accuracy"), 0.29,
                       "seed 000 (TFRS deep retrieval, layer_sizes [64, 32]) final top-100"),
    "multitask": (("protocols", "seed", "factorized_top_k/top_100_categorical_accuracy"), 0.235,
                  "seed 001 (TFRS multi-task, weights (1, 1)) top-100"),
    "autorec": (("test", "root_mean_squared_error"), 0.895, "seed 004 (d2l AutoRec) test RMSE"),
}


def _get(metrics: dict[str, Any], path: tuple[str, ...]) -> float:
    for key in path:
        metrics = metrics[key]
    return float(metrics)


def run(name: str, seed: int, vary_split: bool, overrides: list[str]) -> dict[str, Any]:
    sets = [f"seed={seed}", "output.plots=false", *overrides] + ([f"split.seed={seed}"] if vary_split else [])
    config = load_config(ROOT / "configs" / f"{name}.yaml", sets)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Reporter("quiet"), run_dir=Path(tmp) / "run")
    return {"seed": seed, "overrides": sets, "metrics": result.metrics, "wall_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", choices=sorted(PUBLISHED))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--vary-split", action="store_true", help="also set split.seed to each seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    path, published, source = PUBLISHED[args.config]
    runs = []
    for seed in args.seeds:
        runs.append(run(args.config, seed, args.vary_split, args.overrides))
        print(f"{args.config} seed {seed}: {_get(runs[-1]['metrics'], path):.4f}", flush=True)
    values = [_get(r["metrics"], path) for r in runs]
    entry = {"metric": "/".join(path), "values": values, "mean": statistics.mean(values),
             "sd": statistics.stdev(values) if len(values) > 1 else None, "published": published,
             "published_source": source, "difference": statistics.mean(values) - published,
             "vary_split": args.vary_split, "runs": runs}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.config if not args.overrides else f"{args.config} {' '.join(args.overrides)}"] = entry
    atomic_write_json(RESULTS, results)
    print(json.dumps({k: v for k, v in entry.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
