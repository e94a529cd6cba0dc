"""The shipped seed-experiment configs through `recstack train`, over several seeds.

Each (config, seed) runs `recstack train NAME --set seed=S [--set split.seed=S] [--set ...]` into a
temporary run folder and keeps its test metrics; the JSON gathers, for every figure of the
config's reference block (the variant that matches the --set options, if any), the values, their
mean and standard deviation, and the published figure.

Usage (real data needed):
    RECSTACK_DATA_DIR=... python benchmarks/cli_configs.py autorec --seeds 0 1 2 3 4 --vary-split
    RECSTACK_DATA_DIR=... python benchmarks/cli_configs.py deep-retrieval --seeds 0
    RECSTACK_DATA_DIR=... python benchmarks/cli_configs.py deep-retrieval --set model.layer_sizes=[32]
Results are merged into benchmarks/results/cli_configs.json (one entry per config and --set options).
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
from recstack.experiment.config_files import load_config, shipped_configs
from recstack.experiment.reference import applicable_reference, compare
from recstack.experiment.reporter import Reporter
from recstack.experiment.run import train

RESULTS = Path(__file__).resolve().parent / "results" / "cli_configs.json"


def run(name: str, seed: int, vary_split: bool, overrides: list[str]) -> dict[str, Any]:
    sets = [f"seed={seed}", "output.plots=false", *overrides] + ([f"split.seed={seed}"] if vary_split else [])
    config = load_config(name, sets)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Reporter("quiet"), run_dir=Path(tmp) / "run")
    return {"seed": seed, "overrides": sets, "metrics": result.metrics, "wall_seconds": time.perf_counter() - start}


def main() -> None:
    with_reference = [n for n in shipped_configs() if load_config(n).reference is not None]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", choices=with_reference)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--vary-split", action="store_true", help="also set split.seed to each seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    reference = applicable_reference(load_config(args.config, args.overrides))
    runs = []
    for seed in args.seeds:
        runs.append(run(args.config, seed, args.vary_split, args.overrides))
        rows = compare(runs[-1]["metrics"], reference)
        print(f"{args.config} seed {seed}: " + ", ".join(f"{r.metric} {r.result:.4f}" for r in rows), flush=True)
    figures = {}
    for key, published in reference.metrics.items():
        values = [next(r.result for r in compare(run["metrics"], reference) if r.metric == key) for run in runs]
        figures[key] = {"values": values, "mean": statistics.mean(values),
                        "sd": statistics.stdev(values) if len(values) > 1 else None, "published": published,
                        "difference": statistics.mean(values) - published}
    entry = {"reference": figures, "published_source": reference.source, "published_label": reference.label,
             "vary_split": args.vary_split, "runs": runs}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.config if not args.overrides else f"{args.config} {' '.join(args.overrides)}"] = entry
    atomic_write_json(args.out, results)
    print(json.dumps({k: v for k, v in entry.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
