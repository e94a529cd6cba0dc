"""Load test of next-item serving: POST /v1/recommend with 50-item histories to a SASRec bundle.

Writes benchmarks/results/sequential_serving.json. Run from the repository root on a quiet machine:

    RECSTACK_DATA_DIR=/path/to/ml-100k .venv/bin/python benchmarks/sequential_serving.py   # ~3-5 min

What it does, and nothing else:

1. Bundle (cached under $TMPDIR/recstack-seq-serving-bench unless --rebuild):
   ``recstack train sasrec --set training.epochs=E`` (the shipped config: max_length 100, d=64,
   two blocks, 1,682 movies; E=3 by default, since latency does not depend on the weights'
   values) then ``recstack export RUN BUNDLE`` (history query tower, brute force over the catalogue).
2. Starts ``recstack serve BUNDLE`` pinned to one core (``taskset -c 0``, OMP_NUM_THREADS=1,
   one uvicorn worker) and waits for /readyz (benchmarks/server.py's helpers).
3. Per variant (unbatched; dynamic batching with a 0 ms window, ``--batch-window-ms 0``),
   run and concurrency level (1 / 8): waits for a quiet machine, warms up 2 s, then
   ``wrk -t1 -cC`` pinned to the other core posts ``{"query": {"history": [50 item ids]}, "k": 10}``
   (history excluded from the answer), rotating through 2,000 bodies: the latest 50 items of
   users with at least 50, each body with one id the catalogue lacks 1% of the time (dropped).
   Records requests/s, wrk's p50/p90/p99, errors and the server's CPU per request; medians over runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_json  # noqa: E402
from server import CLI, LUA, bench_variant  # noqa: E402

from recstack.serving import load_bundle  # noqa: E402

TARGET_P99_MS = 20.0
#: (name, ServerSettings.batch_window_ms): each request searched alone, and dynamic batching with
#: no added wait (a batch is whatever arrived while the previous one was searched).
VARIANTS = [("sasrec-ml100k-history", None), ("sasrec-ml100k-history-batched-0ms", 0.0)]


def build_bundle(root: Path, data_dir: str, epochs: int, rebuild: bool) -> dict[str, Any]:
    """``recstack train sasrec --set training.epochs=E`` + ``recstack export`` (cached)."""
    run, bundle, stamp = root / "run", root / "bundle", root / "source.json"
    source = {"config": "sasrec", "epochs": epochs, "data_dir": str(Path(data_dir).resolve()), "version": 1}
    if bundle.exists() and stamp.exists() and not rebuild and json.loads(stamp.read_text()) == source:
        return {"reused": True, **source}
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, "train", "sasrec", "--set", f"training.epochs={epochs}",
                    "--run-dir", str(run), "--progress", "quiet"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    train_s = time.perf_counter() - t0
    subprocess.run([sys.executable, "-c", CLI, "export", str(run), str(bundle)], check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(json.dumps(source))
    return {"reused": False, **source, "train_s": round(train_s, 1)}


def bodies_file(path: Path, bundle_dir: Path, length: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """2,000 bodies: the latest ``length`` raw item ids of users with at least that many stored."""
    bundle = load_bundle(bundle_dir)
    store, ident = bundle.history, bundle.identifiers
    counts = np.diff(store.lists.indptr)
    rows = np.flatnonzero(counts >= length)
    rng = np.random.default_rng(seed)
    lines = []
    for r in rng.choice(rows, 2000):
        items = ident[store.lists.row(int(r))[-length:]].tolist()
        if rng.random() < 0.01:
            items[int(rng.integers(length))] = "not-a-movie"
        lines.append(json.dumps({"query": {"history": items}, "k": 10}))
    path.write_text("\n".join(lines) + "\n")
    return path, {"bodies": 2000, "history_length": length, "users_with_that_many": int(rows.shape[0]),
                  "unknown_id_share": 0.01}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--runs", type=int, default=3, help="runs of every level (medians are reported)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the benchmark bundle")
    parser.add_argument("--history-length", type=int, default=50)
    parser.add_argument("--quiet-cores", type=float, default=0.3)
    parser.add_argument("--max-wait", type=float, default=20.0, help="longest wait for a quiet machine (s)")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--out", help="write here instead of benchmarks/results/sequential_serving.json")
    args = parser.parse_args()
    data_dir = os.environ.get("RECSTACK_DATA_DIR")
    if not data_dir:
        sys.exit("set RECSTACK_DATA_DIR to a MovieLens 100K folder")
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("this benchmark needs wrk and taskset (apt-get install wrk util-linux)")
    root = Path(tempfile.gettempdir()) / "recstack-seq-serving-bench"
    info = build_bundle(root, data_dir, args.epochs, args.rebuild)
    bundle = root / "bundle"
    work = Path(tempfile.mkdtemp(prefix="recstack-wrk-seq-"))
    try:
        script = work / "post.lua"
        script.write_text(LUA)
        bodies, request = bodies_file(work / "bodies.txt", bundle, args.history_length, seed=5)
        levels = [int(v) for v in args.levels.split(",")]
        variants = [bench_variant(name, bundle, window, levels, args.runs, args.seconds, script, bodies, args)
                    for name, window in VARIANTS]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = json.loads((bundle / "manifest.json").read_text())

    def met(variant: dict[str, Any]) -> bool:
        at8 = next((m for m in variant["median"] if m["concurrency"] == 8), None)
        return bool(at8 and at8["latency_ms"]["p99"] < TARGET_P99_MS)
    results = {
        "benchmark": "sequential_serving", "environment": environment(),
        "bundle": {"built_with": f"recstack train sasrec --set training.epochs={args.epochs}; recstack export RUN "
                                 "BUNDLE", "note": "training shortened: serving speed does not depend on the "
                                 "weights' values", **info, "num_candidates": manifest["num_candidates"],
                   "embedding_dim": manifest["embedding_dim"], "max_length": manifest["history"]["max_length"],
                   "index": manifest["index"]["kind"], "num_users": manifest["history"]["num_users"]},
        "layout": {"server_cpus": "0", "load_generator_cpus": "1", "load_generator": "wrk -t1",
                   "server": "recstack serve BUNDLE: one uvicorn worker, OMP_NUM_THREADS=1"},
        "request": {"path": "/v1/recommend", "k": 10, "keep_history": False, **request},
        "protocol": {"levels": levels, "seconds_per_level": args.seconds, "warmup_s": 2.0, "runs": args.runs,
                     "median_over_runs": True},
        "target": {"p99_ms_at_concurrency_8": TARGET_P99_MS, "met": {v["name"]: met(v) for v in variants}},
        "variants": variants}
    path = Path(args.out) if args.out else write_json("sequential_serving.json", results)
    if args.out:
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
