"""Time transforming 100k rows with each preprocessing layer (median of 5 runs).

Usage: python benchmarks/features.py [--rows 100000] [--repeats 5]
Prints a table and writes benchmarks/results/features.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from recstack.core.io import atomic_write_json
from recstack.features import (
    Discretization,
    FeatureSet,
    IntegerLookup,
    Normalization,
    StringLookup,
    TextVectorization,
)

RESULTS = Path(__file__).resolve().parent / "results" / "features.json"


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    n, rng = args.rows, np.random.default_rng(0)

    # MovieLens-100K-like shapes: ~1k users, ~1.7k titles, 1e9-scale timestamps.
    user_ids = rng.integers(1, 1000, n)
    user_str = pd.Series(user_ids.astype(str))
    user_list = user_str.tolist()
    timestamps = rng.integers(874_724_710, 893_286_638, n).astype(np.int64)
    words = np.array([f"w{i}" for i in range(2000)])
    titles = pd.Series(
        [" ".join(words[rng.integers(0, 2000, 5)]) + f", The ({1900 + i % 100})" for i in range(n)]
    )

    # The ratings table repeats each movie title many times (MovieLens 100K: 1,664 titles).
    repeated_titles = titles.iloc[rng.integers(0, 1_664, n)].reset_index(drop=True)

    string_lookup = StringLookup().fit(user_str)
    integer_lookup = IntegerLookup().fit(user_ids)
    discretization = Discretization(num_bins=1000).fit(timestamps)
    normalization = Normalization().fit(timestamps)
    text = TextVectorization(max_tokens=10_000).fit(titles)
    features = FeatureSet(
        {"user_id": StringLookup(), "movie_title": StringLookup(), "title_text": TextVectorization()}
    )
    features.add("timestamp_bucket", Discretization(num_bins=1000), "timestamp")
    features.add("timestamp_norm", Normalization(), "timestamp")
    frame = pd.DataFrame({"user_id": user_str, "movie_title": titles, "title_text": titles, "timestamp": timestamps})
    features.fit(frame)

    cases: dict[str, Callable[[], Any]] = {
        "StringLookup.transform (pandas Series of str)": lambda: string_lookup(user_str),
        "StringLookup.transform (list of str)": lambda: string_lookup(user_list),
        "IntegerLookup.transform (int64 ndarray)": lambda: integer_lookup(user_ids),
        "Discretization.transform (1000 quantile bins)": lambda: discretization(timestamps),
        "Normalization.transform (int64 timestamps)": lambda: normalization(timestamps),
        "TextVectorization.transform (100k distinct titles, 8 tokens/row)": lambda: text(titles),
        "TextVectorization.transform (1,664 distinct titles)": lambda: text(repeated_titles),
        "FeatureSet.transform (5 outputs)": lambda: features.transform(frame),
        "StringLookup.fit": lambda: StringLookup().fit(user_str),
        "TextVectorization.fit (100k distinct titles)": lambda: TextVectorization().fit(titles),
    }
    results = {name: round(median_ms(fn, args.repeats), 3) for name, fn in cases.items()}
    width = max(map(len, results))
    for name, ms in results.items():
        print(f"{name:<{width}}  {ms:9.2f} ms")
    report = {
        "rows": n,
        "repeats": args.repeats,
        "statistic": "median wall-clock ms after one warm-up call",
        "results_ms": results,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    print(json.dumps(report["environment"]))


if __name__ == "__main__":
    main()
